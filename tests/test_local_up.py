"""``agentmesh up`` (what ``make up`` runs) end to end: start, ready, stop, restart."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from agentmesh.shared.local.ports import free_port


def up_command(data_dir: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agentmesh.shared.cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("AGENTMESH_DATABASE_URL", "AGENTMESH_NATS_URL", "AGENTMESH_ENV"):
        env.pop(name, None)
    return env


def wait_for_banner(process: subprocess.Popen, timeout: float = 90) -> dict[str, str]:
    """Read stdout until the ready banner; returns {name: url}."""
    urls: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                raise AssertionError(f"agentmesh up exited with {process.returncode}")
            continue
        match = re.match(r"\s+(\w+):\s+(\S+)", line)
        if match:
            urls[match.group(1)] = match.group(2)
        if line.startswith("Press Ctrl-C"):
            return urls
    raise AssertionError("agentmesh up did not become ready in time")


def leftovers(data_dir: Path, ports: list[int]) -> list[str]:
    """Processes whose command line names the data dir or listens on one of ``ports``."""
    wanted = {str(p) for p in ports}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        args = proc.info["cmdline"] or []
        on_port = any(a in ("-p", "--port") and b in wanted for a, b in itertools.pairwise(args))
        if on_port or any(str(data_dir) in a for a in args):
            found.append(f"{proc.info['pid']}: {' '.join(args)[:160]}")
    return found


def run_once(data_dir: Path, port: int) -> dict[str, str]:
    process = subprocess.Popen(
        up_command(data_dir, port),
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        urls = wait_for_banner(process)
        gateway = urls["gateway"]
        assert gateway == f"http://127.0.0.1:{port}"
        assert urls["docs"] == f"{gateway}/docs"
        with httpx.Client(timeout=10) as client:
            ready = client.get(f"{gateway}/health/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"identity": "ok", "agents": "ok", "chat": "ok"}
            for name in ("identity", "agents", "chat"):
                service = client.get(f"{urls[name]}/health/ready")
                assert service.status_code == 200
                assert service.json()["checks"] == {"database": "ok", "nats": "ok"}
            missing = client.get(f"{gateway}/no/such/path")
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        stderr = process.stderr.read() if process.stderr else ""
    assert code == 0, stderr
    assert "Traceback" not in stderr
    return urls


@pytest.mark.timeout(400)
def test_up_runs_the_platform_stops_cleanly_and_restarts_with_data(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    urls = run_once(data_dir, port)
    ports = [port] + [
        int(u.rsplit(":", 1)[1].split("/")[0])
        for k, u in urls.items()
        if k in ("identity", "agents", "chat")
    ]
    assert leftovers(data_dir, ports) == []
    secrets_before = (data_dir / "secrets.env").read_text()
    assert oct((data_dir / "secrets.env").stat().st_mode & 0o777) == "0o600"
    assert (data_dir / "postgres" / "PG_VERSION").exists()

    # Same data directory again: the cluster and the secrets are kept.
    run_once(data_dir, port)
    assert (data_dir / "secrets.env").read_text() == secrets_before
    assert leftovers(data_dir, ports) == []


def test_occupied_port_fails_at_once_with_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            up_command(tmp_path / "d", port),
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"agentmesh up: port {port} on 127.0.0.1 is already in use "
        "(set --port or AGENTMESH_GATEWAY_PORT)"
    ]


def test_unwritable_data_dir_fails_at_once_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        up_command(blocker / "data", free_port()),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("agentmesh up: cannot write the data directory")
    assert "Traceback" not in result.stderr


def test_invalid_gateway_port_in_env_fails_with_one_line(tmp_path):
    env = clean_env() | {"AGENTMESH_GATEWAY_PORT": "eighty"}
    command = up_command(tmp_path / "d", 0)[:-2]  # no --port: the environment decides
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "agentmesh up: invalid gateway port 'eighty' (set --port or AGENTMESH_GATEWAY_PORT)"
    )


@pytest.mark.timeout(120)
def test_sigterm_during_start_up_stops_what_was_started(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    process = subprocess.Popen(
        up_command(data_dir, port),
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Embedded Postgres is up once its pid file exists; the services may not be.
    deadline = time.monotonic() + 60
    while not (data_dir / "postgres" / "postmaster.pid").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "Stopping" in stdout
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert leftovers(data_dir, [port]) == []


async def test_embedded_nats_restarts_on_its_port_with_jetstream_data(tmp_path):
    import nats

    from agentmesh.shared.local.nats import EmbeddedNats

    server = EmbeddedNats(tmp_path / "nats", free_port())
    server.start()
    try:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.one", b"1")
        await client.close()

        server.stop()
        assert not server.running
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()

        server.start()
        client = await nats.connect(server.url)
        info = await client.jetstream().stream_info("KEEP")
        await client.close()
        assert info.state.messages == 1
    finally:
        server.stop()
    assert leftovers(tmp_path, [server.port]) == []


async def test_embedded_postgres_keeps_data_and_survives_a_stale_pid_file(tmp_path):
    import asyncpg

    from agentmesh.shared.local.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path / "pgdata", free_port())
    dsn = f"postgresql://postgres@127.0.0.1:{server.port}/kept"
    server.start()
    try:
        server.ensure_database("kept")
        server.ensure_database("kept")  # idempotent
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE t (v vector(3)); INSERT INTO t VALUES ('[1,2,3]')")
        await conn.close()
        server.stop()
        server.stop()  # idempotent

        # A crash leaves a pid file naming a process that is gone.
        (tmp_path / "pgdata" / "postmaster.pid").write_text("999999\n")
        server.start()
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT v::text FROM t") == "[1,2,3]"
        await conn.close()
    finally:
        server.stop()
    assert leftovers(tmp_path, [server.port]) == []


@pytest.mark.timeout(420)
def test_two_gateway_replicas_answer_behind_the_printed_port(tmp_path):
    """``--replicas gateway=2``: two gateway processes, one round-robin front on the printed
    port; connections alternate between them and each one answers."""
    data_dir = tmp_path / "data"
    port = free_port()
    process = subprocess.Popen(
        [*up_command(data_dir, port), "--replicas", "gateway=2"],
        # Six services start at once: give a busy test machine time.
        env=clean_env() | {"AGENTMESH_UP_READY_SECONDS": "240"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        assert process.stdout is not None
        while not (lines and lines[-1].startswith("Press Ctrl-C")):
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise AssertionError(f"agentmesh up exited: {process.stderr.read()}")
            lines.append(line)
        banner = "".join(lines)
        assert f"gateway:  http://127.0.0.1:{port} (2 replicas" in banner
        replicas = dict(re.findall(r"^\s+(gateway-\d)\s+(\S+)$", banner, re.MULTILINE))
        assert sorted(replicas) == ["gateway-1", "gateway-2"]
        front_log = data_dir / "logs" / "gateway-front.log"
        before = len(front_log.read_text().splitlines())  # start-up's readiness polls
        for _ in range(6):  # a new connection each time
            with httpx.Client(timeout=10) as client:
                ready = client.get(f"http://127.0.0.1:{port}/health/ready")
            assert ready.status_code == 200, ready.text
        deadline = time.monotonic() + 30  # the front logs a connection once it is closed
        while len(ours := front_log.read_text().splitlines()[before:]) < 6:
            assert time.monotonic() < deadline, ours
            time.sleep(0.05)
        for url in replicas.values():  # three connections each, every one answered
            answered = re.findall(rf"-> {re.escape(url[7:])}, (\d+) bytes back", "\n".join(ours))
            assert len(answered) == 3 and all(int(n) > 0 for n in answered), ours
        for url in replicas.values():  # and each replica is a gateway of its own
            assert httpx.get(f"{url}/health/live", timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        stderr = process.stderr.read() if process.stderr else ""
    assert code == 0, stderr
    assert "Traceback" not in stderr
    ports = [port] + [int(u.rsplit(":", 1)[1]) for u in replicas.values()]
    assert leftovers(data_dir, ports) == []


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("web=2", "--replicas: unknown service 'web' (one of identity, agents, chat, gateway)"),
        ("chat=0", "--replicas: chat needs a count from 1 to 8, not '0'"),
        ("chat", "--replicas: chat needs a count from 1 to 8, not ''"),
    ],
)
def test_a_wrong_replicas_option_fails_at_once_with_one_line(tmp_path, value, error):
    result = subprocess.run(
        [*up_command(tmp_path / "d", free_port()), "--replicas", value],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"agentmesh up: {error}"

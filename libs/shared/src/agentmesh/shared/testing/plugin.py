"""Pytest plugin: the Postgres and NATS servers every test uses.

Loaded with ``-p agentmesh.shared.testing.plugin`` (see the root pyproject). Fixtures:
``postgres_server``, ``nats_server`` (``.stop()``/``.start()`` when ``.restartable``),
``database_url`` (a fresh ``agentmesh_test`` database with pgvector) and ``nats_url``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentmesh.shared.testing.servers import (
    TEST_DATABASE,
    TestNats,
    TestPostgres,
    choose_modes,
    describe,
    recreate_database,
    start_nats,
    start_postgres,
)

_modes: tuple[str, str] | None = None


def _chosen() -> tuple[str, str]:
    global _modes
    if _modes is None:
        _modes = choose_modes()
    return _modes


def pytest_report_header(config: pytest.Config) -> str:
    """Say which servers the session uses (decided by the same rule as the fixtures)."""
    return describe(*_chosen())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TestPostgres]:
    """The session's Postgres, stopped at session end when we started it."""
    server = start_postgres(_chosen()[0])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[TestNats]:
    """The session's NATS (``.restartable`` when tests may stop and start it)."""
    server = start_nats(_chosen()[1])
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
async def database_url(postgres_server: TestPostgres) -> str:
    """A freshly created ``agentmesh_test`` database (pgvector installed)."""
    await recreate_database(postgres_server.admin_url, TEST_DATABASE)
    return postgres_server.database_url(TEST_DATABASE)


@pytest.fixture(scope="session")
def nats_url(nats_server: TestNats) -> str:
    """URL of the session's NATS (restarted first if a test left it stopped)."""
    if not nats_server.running:
        nats_server.start()
    return nats_server.url

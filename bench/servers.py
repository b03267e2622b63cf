"""Embedded Postgres and NATS for a benchmark run (the same ones ``agentmesh up`` uses)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from agentmesh.shared.local.nats import EmbeddedNats
from agentmesh.shared.local.ports import free_port
from agentmesh.shared.local.postgres import EmbeddedPostgres
from agentmesh.shared.testing.fixtures import upgrade_with_connection_of


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[tuple[str, str]]:
    """(database_url, nats_url) of fresh embedded servers, migrated."""
    from sqlalchemy.ext.asyncio import create_async_engine

    root = Path(tempfile.mkdtemp(prefix="agentmesh-bench-"))
    postgres = EmbeddedPostgres(root / "pg", free_port())
    nats = EmbeddedNats(root / "nats", free_port())
    try:
        await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(postgres.ensure_database, "bench")
        await asyncio.to_thread(nats.start)
        url = postgres.url("bench")
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            for service in ("identity", "agents", "chat"):
                await conn.run_sync(upgrade_with_connection_of(service))
        await engine.dispose()
        yield url, nats.url
    finally:
        nats.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]

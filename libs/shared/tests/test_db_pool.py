"""The shared engine's pool: connections kept, and a dead idle one replaced unseen."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from agentmesh.shared import db
from agentmesh.shared.settings import CommonSettings


def _settings(database_url: str, **fields: object) -> CommonSettings:
    return CommonSettings(database_url=database_url, db_pool_size=1, db_max_overflow=0, **fields)


async def _backend_pid(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()


async def _kill(database_url: str, pid: int) -> None:
    killer = db.create_engine(_settings(database_url))
    try:
        async with killer.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await killer.dispose()


async def test_defaults_keep_every_connection_they_open():
    settings = CommonSettings()
    assert settings.db_max_overflow == 0 and settings.db_pool_size >= 20


async def test_an_idle_connection_that_died_is_replaced_before_use(database_url):
    engine = db.create_engine(_settings(database_url, db_ping_idle_seconds=0.05))
    try:
        pid = await _backend_pid(engine)
        await _kill(database_url, pid)
        await asyncio.sleep(0.1)  # idle longer than the threshold: pinged, found dead
        assert await _backend_pid(engine) != pid
    finally:
        await engine.dispose()


async def test_a_connection_in_steady_use_is_not_pinged(database_url):
    # The same dead connection handed out again at once is not pinged: the statement
    # fails (and invalidates the pool), which shows the ping above is what saved it.
    engine = db.create_engine(_settings(database_url, db_ping_idle_seconds=3600))
    try:
        pid = await _backend_pid(engine)
        await _kill(database_url, pid)
        await asyncio.sleep(0.1)
        with pytest.raises(DBAPIError):
            await _backend_pid(engine)
        assert await _backend_pid(engine) != pid  # the pool was invalidated
    finally:
        await engine.dispose()


async def test_the_reader_runs_each_statement_on_its_own_on_the_same_pool(database_url):
    # Autocommit: no transaction spans two statements (each gets its own transaction id),
    # and the reader hands out the engine's pooled connection, not one of its own.
    engine = db.create_engine(_settings(database_url))
    reader = db.create_reader(engine)
    try:
        pid = await _backend_pid(engine)
        async with reader.connect() as conn:
            first = (await conn.execute(text("SELECT txid_current()"))).scalar_one()
            second = (await conn.execute(text("SELECT txid_current()"))).scalar_one()
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() == pid
        assert first != second
        async with engine.connect() as conn:
            one = (await conn.execute(text("SELECT txid_current()"))).scalar_one()
            assert (await conn.execute(text("SELECT txid_current()"))).scalar_one() == one
    finally:
        await engine.dispose()


async def test_checkout_waits_are_timed_under_the_service_name_across_a_recreated_pool(
    database_url,
):
    # dispose() replaces the pool with a fresh one (``recreate``): its checkouts still count
    # for the service, and no series without a service name appears.
    engine = db.create_engine(_settings(database_url), application_name="agentmesh-waitprobe")
    try:
        await _backend_pid(engine)
        await engine.dispose()
        await _backend_pid(engine)
    finally:
        await engine.dispose()
    count = "agentmesh_db_pool_checkout_wait_seconds_count"
    assert REGISTRY.get_sample_value(count, {"service": "waitprobe"}) == 2
    assert REGISTRY.get_sample_value(count, {"service": ""}) is None

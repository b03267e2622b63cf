"""Database defaults: engine, session-per-request committed at the edge, schema metadata."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import CursorResult, MetaData, Result, event, exc, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from agentmesh.shared.settings import CommonSettings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata(schema: str) -> MetaData:
    """Metadata bound to one service schema, with stable constraint names for Alembic."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def rowcount(result: Result[Any]) -> int:
    """The rows an INSERT, UPDATE or DELETE matched. ``session.execute`` is typed as returning
    a ``Result``; for those statements it is a ``CursorResult``, which counts them."""
    assert isinstance(result, CursorResult), "rowcount is for INSERT, UPDATE and DELETE"
    return result.rowcount


def create_engine(settings: CommonSettings, *, application_name: str = "agentmesh") -> AsyncEngine:
    """The service's async engine (asyncpg) with pool settings from ``settings``; its pool
    reports to ``agentmesh_db_pool_*`` (``shared.metrics``)."""
    from agentmesh.shared.metrics import MeasuredPool

    engine = create_async_engine(
        settings.database_url,
        poolclass=MeasuredPool,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        # Parameters can hold password hashes and tokens: keep them out of error logs.
        hide_parameters=True,
        connect_args={"server_settings": server_settings(settings, application_name)},
    )
    engine.sync_engine.pool.service = application_name.removeprefix("agentmesh-")  # type: ignore[attr-defined]
    ping_when_idle(engine, settings.db_ping_idle_seconds)
    return engine


def ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a pooled connection before handing it out only when it sat idle for at least
    ``idle_seconds``; a dead one is replaced (the pool retries the checkout).

    ``pool_pre_ping`` pings on every checkout: a round trip per request on a busy service.
    A connection given back moments ago is as alive as the ping would say; the ones that
    die quietly (a restarted or failed-over database, a proxy's idle cut) are the idle ones.
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _given_back(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _handed_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("checked_in_at")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # just opened, or in steady use
        try:
            alive = sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError() from error
        if not alive:  # pragma: no cover - asyncpg's ping raises rather than says False
            raise exc.DisconnectionError()


def server_settings(settings: CommonSettings, application_name: str) -> dict[str, str]:
    """Session settings of every connection: its name, and the timeouts that keep a stuck
    statement or a forgotten transaction from holding a pooled connection (and its locks).
    Transaction-local ``set_config`` (the knowledge search's) works under them."""
    return {
        "application_name": application_name,
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(settings.db_idle_in_transaction_timeout_ms),
    }


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (we return them as responses)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: commit when the route returns, roll back when it raises.

    Services add rows and outbox events to this session and never call ``commit()``;
    that keeps each state change and its events in one transaction. A route that calls
    the network first ``release``s the session (see there).
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


#: ``scope="function"`` runs the commit before the response is sent, so a failed commit
#: becomes an error response instead of a 200 for a write that never happened.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


def create_reader(engine: AsyncEngine) -> AsyncEngine:
    """The engine's autocommit twin, sharing its pool: each statement runs on its own,
    with no ``BEGIN`` before it and no ``ROLLBACK`` when the connection goes back. For
    read-only requests made of one statement (or of statements that need not see one
    snapshot): it saves two round trips per request."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def get_read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A pooled autocommit connection for a read-only request (``create_reader``),
    returned to the pool when the route has answered."""
    reader: AsyncEngine = request.app.state.reader
    async with reader.connect() as connection:
        yield connection


#: A read-only request's connection: autocommit, one statement at a time, no transaction.
#: Don't write through it: there is no commit at the edge and no outbox. (The one write on
#: the reader engine is chat's ``record_run``: a single atomic statement with no event.)
ReadConnection = Annotated[AsyncConnection, Depends(get_read_connection, scope="function")]


async def release(session: AsyncSession) -> None:
    """End the request's transaction now and give its connection back to the pool, before
    a call to a model, an MCP server, a provider or another service: a slow one must not
    hold a pooled connection. What the route wrote so far is committed; loaded objects stay
    usable (``expire_on_commit=False``) and the next query takes a connection again."""
    await session.commit()


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))

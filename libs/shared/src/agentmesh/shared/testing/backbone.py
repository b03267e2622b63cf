"""Test helpers for the event backbone: a scratch schema with an outbox, an inbox and an
``effects`` table that counts what consumers applied."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.nats import NatsBroker
from sqlalchemy import BigInteger, Column, Identity, MetaData, Table, Text, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from agentmesh.shared.db import make_metadata
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.tables import EventTables, create_event_tables, event_tables


def backbone_schema(schema: str) -> tuple[MetaData, EventTables, Table]:
    """Metadata of a scratch schema: outbox, inbox and ``effects``."""
    metadata = make_metadata(schema)
    tables = event_tables(metadata)
    effects = Table(
        "effects",
        metadata,
        Column("seq", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", Text, nullable=False),
        Column("subject_id", Text, nullable=False),
        Column("marker", Text, nullable=False),
    )
    return metadata, tables, effects


async def create_backbone_schema(
    engine: AsyncEngine, metadata: MetaData, tables: EventTables
) -> None:
    """(Re)create the scratch schema with its tables and the outbox NOTIFY trigger."""
    schema = metadata.schema
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await conn.run_sync(create_event_tables, tables)
        others = [t for t in metadata.sorted_tables if t.name not in ("outbox", "inbox")]
        await conn.run_sync(metadata.create_all, others)


def recording_handler(effects: Table) -> Callable[[AsyncSession, Envelope, EventPayload], Any]:
    """A consumer handler that records one ``effects`` row per applied event."""

    async def apply(session: AsyncSession, envelope: Envelope, payload: EventPayload) -> None:
        marker = str(envelope.data.get("name", ""))
        if marker.startswith("poison"):
            raise ValueError(f"cannot apply {marker}")
        await session.execute(
            effects.insert().values(
                event_id=envelope.id, subject_id=envelope.subject_id, marker=marker
            )
        )

    return apply


async def count_effects(engine: AsyncEngine, effects: Table) -> tuple[int, int]:
    """(effects applied, distinct events applied)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.count(effects.c.event_id.distinct())).select_from(effects)
            )
        ).one()
    return int(row[0]), int(row[1])


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, interval: float = 0.05
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took. Raises on timeout."""
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def make_broker(nats_url: str, **kwargs: Any) -> NatsBroker:
    """A broker that reconnects forever, as services configure it."""
    # nats-py sleeps a float of seconds between reconnects; faststream annotates it as int.
    return NatsBroker(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, **kwargs)  # type: ignore[arg-type]

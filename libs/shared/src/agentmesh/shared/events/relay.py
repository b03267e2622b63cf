"""The outbox relay: publishes committed outbox rows to JetStream, exactly once per event.

- Claims unsent rows with ``FOR UPDATE SKIP LOCKED``, so any number of replicas can run it.
- Publishes each with ``Nats-Msg-Id = event id``; JetStream drops a re-publish after a crash.
- Keeps per-aggregate order across replicas: a row is only published when every earlier
  unsent row of the same aggregate is in the same claim.
- Wakes on ``LISTEN/NOTIFY`` right after a commit, with a periodic sweep as a safety net.
  While NATS is down rows simply wait; writes never fail because of the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
from faststream.nats import NatsBroker
from nats.errors import MaxPayloadError
from nats.js.errors import BadRequestError
from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import bindparam, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from agentmesh.shared.events import metrics
from agentmesh.shared.events.streams import stream_name
from agentmesh.shared.events.tables import EventTables

logger = logging.getLogger("agentmesh.outbox")

#: Errors about one message, not the broker: retrying the same bytes cannot succeed.
UNPUBLISHABLE = (MaxPayloadError, BadRequestError)


def asyncpg_dsn(database_url: str) -> str:
    """A plain ``postgresql://`` DSN for asyncpg from a SQLAlchemy URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class OutboxRelay:
    """Drains one service's outbox into JetStream. Start it in the app's lifespan."""

    def __init__(
        self,
        engine: AsyncEngine,
        tables: EventTables,
        broker: NatsBroker,
        *,
        sweep_seconds: float = 5.0,
        batch_size: int = 200,
        publish_timeout: float = 2.0,
        retention_seconds: float = 7 * 24 * 3600,
        prune_every_seconds: float = 600.0,
        service: str | None = None,
        stats_seconds: float = 15.0,
    ) -> None:
        self.engine = engine
        self.tables = tables
        self.broker = broker
        self.sweep_seconds = sweep_seconds
        self.batch_size = batch_size
        self.publish_timeout = publish_timeout
        self.retention_seconds = retention_seconds
        self.prune_every_seconds = prune_every_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._stopping = False
        self.published = 0
        schema = tables.schema
        #: The ``service`` label of this relay's metrics (its schema by default).
        self.service = service or schema
        self.stats_seconds = stats_seconds
        # Both served by the partial index on unsent rows.
        self._waiting_sql = text(f'SELECT count(*) FROM "{schema}".outbox WHERE sent_at IS NULL')
        self._oldest_sql = text(
            "SELECT extract(epoch FROM now() - created_at) "
            f'FROM "{schema}".outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1'
        )
        self._claim_sql = text(
            f"""
            SELECT id, event_id, subject, subject_id, envelope, headers
            FROM "{schema}".outbox
            WHERE sent_at IS NULL
            ORDER BY id
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
            """
        )
        # Earlier unsent rows of the claimed aggregates that another relay holds.
        self._blockers_sql = text(
            f"""
            SELECT subject_id, min(id) AS first_id
            FROM "{schema}".outbox
            WHERE sent_at IS NULL
              AND subject_id IN :subject_ids
              AND NOT (id = ANY(:claimed))
            GROUP BY subject_id
            """
        ).bindparams(bindparam("subject_ids", expanding=True))
        self._mark_sent_sql = text(
            f'UPDATE "{schema}".outbox SET sent_at = now(), attempts = attempts + 1 '
            "WHERE id = ANY(:ids)"
        )
        self._mark_failed_sql = text(
            f'UPDATE "{schema}".outbox SET attempts = attempts + 1, last_error = :error '
            "WHERE id = :id"
        )
        self._prune_sql = text(
            f'DELETE FROM "{schema}".outbox WHERE sent_at < now() - make_interval(secs => :secs)'
        )
        self._prune_inbox_sql = text(
            f'DELETE FROM "{schema}".inbox '
            "WHERE processed_at < now() - make_interval(secs => :secs)"
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen for commits and start draining in the background."""
        await self._listen()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.tables.schema}")

    async def stop(self) -> None:
        """Stop draining; unsent rows stay for the next start or another replica."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._unlisten()

    def wake(self) -> None:
        """Ask for a drain now (the NOTIFY listener calls this)."""
        self._wake.set()

    async def _listen(self) -> None:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(self.engine.url.render_as_string(False)))
            await conn.add_listener(self.tables.notify_channel, self._on_notify)
            self._listener = conn
        except (OSError, asyncpg.PostgresError) as exc:
            # The sweep still drains; we retry the listener on every sweep.
            logger.warning("outbox listener unavailable: %s", exc)
            self._listener = None

    async def _unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_prune = 0.0
        last_stats = -self.stats_seconds
        failures = 0
        while not self._stopping:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.sweep_seconds)
                self._wake.clear()
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                try:
                    await self.drain()
                finally:
                    # After the pass, failed or not: while NATS is away the drain fails,
                    # and that is when the backlog matters.
                    if loop.time() - last_stats >= self.stats_seconds:
                        last_stats = loop.time()
                        await self._measure_quietly()
                failures = 0
                if loop.time() - last_prune > self.prune_every_seconds:
                    await self.prune()
                    last_prune = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(0.2 * 2**failures, self.sweep_seconds)
                logger.warning("outbox relay pass failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    # ------------------------------------------------------------------ work

    async def drain(self) -> int:
        """Publish until the outbox is empty or the broker fails; returns events sent."""
        total = 0
        while True:
            claimed, sent, failed = await self.publish_batch()
            total += sent
            if failed:
                raise ConnectionError("broker unavailable; unsent events will be retried")
            if claimed < self.batch_size or sent == 0:
                return total

    async def publish_batch(self) -> tuple[int, int, bool]:
        """One claim-publish-mark transaction: (rows claimed, rows sent, a publish failed)."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(self._claim_sql, {"limit": self.batch_size})).all()
            if not rows:
                return 0, 0, False
            blocked = await self._blocked_aggregates(conn, rows)
            stuck: set[str] = set()
            sent_ids: list[int] = []
            failed = False
            for row in rows:
                first_held = blocked.get(row.subject_id)
                if first_held is not None and first_held < row.id:
                    continue  # an earlier event of this aggregate is held by another relay
                if row.subject_id in stuck:
                    continue  # keep this aggregate's order behind its unpublishable event
                try:
                    await self._publish(row)
                except UNPUBLISHABLE as exc:
                    # This message can never go (too big, refused by the stream): log it,
                    # hold its aggregate back, and let every other aggregate flow.
                    stuck.add(row.subject_id)
                    metrics.OUTBOX_PUBLISH_ERRORS.labels(self.service, "unpublishable").inc()
                    error = f"{type(exc).__name__}: {exc}"
                    await conn.execute(self._mark_failed_sql, {"id": row.id, "error": error})
                    logger.error(
                        "outbox event cannot be published",
                        extra={
                            "event_id": str(row.event_id),
                            "subject": row.subject,
                            "error": error,
                        },
                    )
                    continue
                except Exception as exc:
                    # The broker is away: stop here, the sweep retries the rest.
                    failed = True
                    metrics.OUTBOX_PUBLISH_ERRORS.labels(self.service, "broker").inc()
                    await conn.execute(self._mark_failed_sql, {"id": row.id, "error": str(exc)})
                    break
                sent_ids.append(row.id)
            if sent_ids:
                await conn.execute(self._mark_sent_sql, {"ids": sent_ids})
        self.published += len(sent_ids)
        if sent_ids:
            metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(sent_ids))
        return len(rows), len(sent_ids), failed

    async def _blocked_aggregates(self, conn: Any, rows: Sequence[Any]) -> dict[str, int]:
        subject_ids = sorted({row.subject_id for row in rows})
        result = await conn.execute(
            self._blockers_sql,
            {"subject_ids": subject_ids, "claimed": [row.id for row in rows]},
        )
        return {r.subject_id: r.first_id for r in result}

    async def _publish(self, row: Any) -> None:
        headers = {str(k): str(v) for k, v in (row.headers or {}).items()}
        # Continue the trace of the request that wrote the event.
        token = otel_context.attach(propagate.extract(headers))
        try:
            headers["Nats-Msg-Id"] = str(row.event_id)
            await self.broker.publish(
                row.envelope,
                subject=row.subject,
                headers=headers,
                stream=stream_name(row.subject.split(".", 1)[0]),
                timeout=self.publish_timeout,
            )
        finally:
            otel_context.detach(token)

    async def measure(self) -> tuple[int, float]:
        """Set the outbox gauges: (rows waiting, age in seconds of the oldest)."""
        async with self.engine.connect() as conn:
            waiting = int(await conn.scalar(self._waiting_sql) or 0)
            oldest = float(await conn.scalar(self._oldest_sql) or 0.0) if waiting else 0.0
        metrics.OUTBOX_WAITING.labels(self.service).set(waiting)
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(oldest)
        return waiting, oldest

    async def _measure_quietly(self) -> None:
        try:
            await self.measure()
        except Exception as exc:  # the gauges keep their last value
            logger.debug("outbox gauges not measured: %s", exc)

    async def prune(self) -> None:
        """Delete sent outbox rows and processed inbox rows older than the retention."""
        async with self.engine.begin() as conn:
            await conn.execute(self._prune_sql, {"secs": self.retention_seconds})
            await conn.execute(self._prune_inbox_sql, {"secs": self.retention_seconds})

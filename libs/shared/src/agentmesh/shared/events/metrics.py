"""Prometheus metrics of the event backbone: the outbox and the durable consumers.

- ``agentmesh_outbox_waiting{service}``: unsent outbox rows, and
  ``agentmesh_outbox_oldest_age_seconds{service}``: age of the oldest of them (0 when none).
  The relay measures both on its own loop, at most every ``stats_seconds``, with two
  index-backed statements on a connection it returns at once (never at scrape time).
- ``agentmesh_outbox_published_total{service}`` and
  ``agentmesh_outbox_publish_errors_total{service, reason}``: ``reason`` is ``broker``
  (NATS away or slow: the row is retried) or ``unpublishable`` (too big, refused by the
  stream: the row holds its aggregate back).
- ``agentmesh_consumer_deliveries_total{service, consumer, outcome}``: every delivery a
  durable consumer handled, by ``outcome``: ``processed``, ``duplicate`` (inbox hit),
  ``failed`` (nak'ed for redelivery), ``dead_lettered``;
  ``agentmesh_consumer_redeliveries_total{service, consumer}``: deliveries after the first;
  ``agentmesh_consumer_dead_lettered_total{service, consumer}``: events sent to the DLQ.
- ``agentmesh_consumer_pending{service, consumer}`` (the lag: messages of the stream not yet
  delivered to the consumer, JetStream's ``num_pending``) and
  ``agentmesh_consumer_ack_pending{service, consumer}`` (delivered, not yet acked), read
  from the consumer's info every ``interval`` seconds by ``ConsumerLagMonitor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

logger = logging.getLogger("agentmesh.events.metrics")

OUTBOX_WAITING = Gauge("agentmesh_outbox_waiting", "Outbox rows not yet published.", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "agentmesh_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row (0 when the outbox is drained).",
    ["service"],
)
OUTBOX_PUBLISHED = Counter(
    "agentmesh_outbox_published", "Outbox events published to JetStream.", ["service"]
)
OUTBOX_PUBLISH_ERRORS = Counter(
    "agentmesh_outbox_publish_errors",
    "Outbox publishes that failed, by reason (broker, unpublishable).",
    ["service", "reason"],
)
DELIVERIES = Counter(
    "agentmesh_consumer_deliveries",
    "Deliveries handled by a durable consumer, by outcome.",
    ["service", "consumer", "outcome"],
)
REDELIVERIES = Counter(
    "agentmesh_consumer_redeliveries",
    "Deliveries after the first of the same event.",
    ["service", "consumer"],
)
DEAD_LETTERED = Counter(
    "agentmesh_consumer_dead_lettered",
    "Events a durable consumer gave up on and published to the DLQ.",
    ["service", "consumer"],
)
CONSUMER_PENDING = Gauge(
    "agentmesh_consumer_pending",
    "Lag: stream messages not yet delivered to the durable consumer (num_pending).",
    ["service", "consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "agentmesh_consumer_ack_pending",
    "Messages delivered to the durable consumer and not yet acknowledged.",
    ["service", "consumer"],
)


@dataclass(frozen=True)
class Durable:
    service: str
    stream: str
    consumer: str


class ConsumerLagMonitor:
    """Reads each durable consumer's info every ``interval`` seconds into the lag gauges.

    One short request per consumer (``timeout`` each); a failure (NATS away, consumer not
    created yet) leaves the last value and is retried on the next round.
    """

    def __init__(self, *, interval: float = 15.0, timeout: float = 2.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self.durables: list[Durable] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, service: str, stream: str, consumer: str) -> None:
        self.durables.append(Durable(service, stream, consumer))

    def start(self, jetstream: Callable[[], Awaitable[Any]]) -> None:
        """Start polling once ``jetstream()`` (awaited once) returns a JetStream context."""
        if self.durables and self._task is None:
            self._task = asyncio.create_task(self._run(jetstream), name="consumer-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
            self._task = None

    async def _run(self, jetstream: Callable[[], Awaitable[Any]]) -> None:
        js = await jetstream()
        while True:
            await self.refresh(js)
            await asyncio.sleep(self.interval)

    async def refresh(self, js: Any) -> None:
        for durable in self.durables:
            try:
                info = await js.consumer_info(
                    durable.stream, durable.consumer, timeout=self.timeout
                )
            except Exception as exc:  # the next round retries
                logger.debug(
                    "consumer info unavailable: %s", exc, extra={"consumer": durable.consumer}
                )
                continue
            labels = (durable.service, durable.consumer)
            CONSUMER_PENDING.labels(*labels).set(info.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(*labels).set(info.num_ack_pending or 0)

"""Idempotent JetStream consumers: durable pull consumers with an inbox and a DLQ.

``subscribe_events`` registers one durable pull consumer per (service, purpose), shared by
every replica of the service, so each event is handled once per service. The handler's
effects and the inbox row ``(consumer, event_id)`` commit in one transaction: a redelivered
event finds its inbox row and is acked without running again. Acks happen only after the
commit; failures are nak'ed with a doubling delay, and after ``max_deliver`` deliveries
the event is published to ``dlq.<service>.<subject>`` with the error and terminated.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from nats.js.api import DeliverPolicy
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentmesh.shared import errortracking
from agentmesh.shared.context import REQUEST_ID_HEADER, request_id_var
from agentmesh.shared.events import metrics
from agentmesh.shared.events.contracts import contract_for
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.streams import DLQ_STREAM, dlq_subject, stream_name
from agentmesh.shared.events.tables import EventTables

logger = logging.getLogger("agentmesh.inbox")

#: ``async def handler(session, envelope, payload) -> None``: apply the event's effects.
EventHandler = Callable[[AsyncSession, Envelope, EventPayload], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerPolicy:
    """Redelivery policy of a consumer."""

    max_deliver: int = 5
    backoff_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    ack_wait_seconds: float = 30.0
    batch_size: int = 16

    def delay(self, delivered: int) -> float:
        """Delay before redelivery ``delivered + 1``: doubling, capped."""
        return min(self.backoff_seconds * 2.0 ** max(delivered - 1, 0), self.backoff_max_seconds)


def subscribe_events(
    broker: NatsBroker,
    *,
    service: str,
    purpose: str,
    subject: str,
    tables: EventTables,
    sessionmaker: async_sessionmaker[AsyncSession],
    handler: EventHandler,
    policy: ConsumerPolicy | None = None,
) -> Any:
    """Register ``handler`` for ``subject`` (wildcards allowed, e.g. ``agents.agent.>``)
    as the durable consumer ``<service>-<purpose>``.
    """
    policy = policy or ConsumerPolicy()
    durable = f"{service}-{purpose}"
    config = ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        # Our own counter sends the event to the DLQ; the server must not drop it first.
        max_deliver=-1,
        ack_wait=policy.ack_wait_seconds,
    )
    subscriber = broker.subscriber(
        subject,
        stream=JStream(name=stream_name(subject.split(".", 1)[0]), declare=False),
        durable=durable,
        config=config,
        pull_sub=PullSub(batch_size=policy.batch_size, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        # Decode in our handler, so a malformed body is retried and dead-lettered too.
        decoder=_raw_body,
        title=durable,
        description=f"{service} consumes {subject} ({purpose})",
    )

    async def consume(body: Any, msg: NatsMessage) -> None:
        await handle_delivery(
            body,
            msg,
            service=service,
            consumer=durable,
            tables=tables,
            sessionmaker=sessionmaker,
            handler=handler,
            policy=policy,
            broker=broker,
        )

    consume.__name__ = f"consume_{service}_{purpose}".replace("-", "_")
    return subscriber(consume)


async def _raw_body(msg: NatsMessage) -> bytes:
    return msg.body


async def handle_delivery(
    body: bytes,
    msg: NatsMessage,
    *,
    service: str,
    consumer: str,
    tables: EventTables,
    sessionmaker: async_sessionmaker[AsyncSession],
    handler: EventHandler,
    policy: ConsumerPolicy,
    broker: NatsBroker,
) -> None:
    """Apply one delivery exactly once, then ack; nak or dead-letter on failure."""
    raw = msg.raw_message
    headers = raw.headers or {}
    token = request_id_var.set(headers.get(REQUEST_ID_HEADER))
    subject = raw.subject
    delivered = raw.metadata.num_delivered if raw.metadata else 1
    if delivered > 1:
        metrics.REDELIVERIES.labels(service, consumer).inc()
    event_id = None
    outcome = "processed"
    try:
        envelope = Envelope.model_validate_json(body)
        event_id = envelope.id
        payload = contract_for(envelope.type).model_validate(envelope.data)
        async with sessionmaker() as session, session.begin():
            inserted = await session.execute(
                insert(tables.inbox)
                .values(consumer=consumer, event_id=envelope.id, subject=envelope.type)
                .on_conflict_do_nothing()
                .returning(tables.inbox.c.event_id)
            )
            if inserted.first() is None:
                outcome = "duplicate"
                logger.info(
                    "duplicate event skipped",
                    extra={"event_id": envelope.id, "subject": subject, "consumer": consumer},
                )
            else:
                await handler(session, envelope, payload)
    except Exception as exc:
        await _on_failure(
            msg,
            exc,
            body,
            service=service,
            consumer=consumer,
            subject=subject,
            event_id=event_id,
            delivered=delivered,
            policy=policy,
            broker=broker,
        )
    else:
        await msg.ack()
        metrics.DELIVERIES.labels(service, consumer, outcome).inc()
    finally:
        request_id_var.reset(token)


async def _on_failure(
    msg: NatsMessage,
    exc: Exception,
    body: bytes,
    *,
    service: str,
    consumer: str,
    subject: str,
    event_id: Any,
    delivered: int,
    policy: ConsumerPolicy,
    broker: NatsBroker,
) -> None:
    context = {
        "event_id": event_id,
        "subject": subject,
        "consumer": consumer,
        "delivered": delivered,
        "error": f"{type(exc).__name__}: {exc}"[:500],
    }
    if delivered < policy.max_deliver:
        delay = policy.delay(delivered)
        logger.warning("event handling failed; redelivering in %.2fs", delay, extra=context)
        await msg.nack(delay=delay)
        metrics.DELIVERIES.labels(service, consumer, "failed").inc()
        return
    try:
        await broker.publish(
            body,
            subject=dlq_subject(service, subject),
            headers={
                "Nats-Msg-Id": f"dlq:{consumer}:{event_id or msg.raw_message.reply}",
                "AgentMesh-Error": context["error"],
                "AgentMesh-Consumer": consumer,
                "AgentMesh-Deliveries": str(delivered),
                "AgentMesh-Original-Subject": subject,
            },
            stream=DLQ_STREAM,
        )
    except Exception:
        # Keep the event: it stays in the stream and is retried until the DLQ accepts it.
        logger.exception("could not dead-letter event; redelivering", extra=context)
        await msg.nack(delay=policy.backoff_max_seconds)
        metrics.DELIVERIES.labels(service, consumer, "failed").inc()
        return
    # The handler's exception goes to error tracking once per event given up on (not once
    # per delivery); the log line carries the same exception, so it is not sent again.
    errortracking.capture(
        exc,
        service=service,
        consumer=consumer,
        subject=subject,
        event_id=str(event_id) if event_id else None,
    )
    logger.error("event dead-lettered after %d deliveries", delivered, extra=context, exc_info=exc)
    await msg.reject()
    metrics.DELIVERIES.labels(service, consumer, "dead_lettered").inc()
    metrics.DEAD_LETTERED.labels(service, consumer).inc()

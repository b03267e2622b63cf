"""The event backbone against real Postgres and real NATS JetStream."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from nats.js.errors import NotFoundError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from agentmesh.shared.events.contracts import UserUpdated
from agentmesh.shared.events.inbox import ConsumerPolicy, subscribe_events
from agentmesh.shared.events.relay import OutboxRelay
from agentmesh.shared.events.streams import ensure_streams
from agentmesh.shared.testing.backbone import (
    count_effects,
    make_broker,
    recording_handler,
    wait_until,
)

SUBJECT = "identity.user.updated"


def event(user_id: uuid.UUID, marker: str) -> UserUpdated:
    return UserUpdated(user_id=user_id, email="u@example.com", name=marker)


@pytest.fixture
async def js(nats_url):
    """A JetStream context with the streams declared and the IDENTITY stream emptied."""
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await js.purge_stream("IDENTITY")
    await js.purge_stream("DLQ")
    yield js
    await nc.close()


class Harness:
    """Brokers, relays and consumers for one test; everything is stopped at the end."""

    def __init__(self, engine, nats_url, tables, effects):
        self.engine, self.nats_url, self.tables, self.effects = engine, nats_url, tables, effects
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        self.brokers = []
        self.relays = []
        self.durable_suffix = uuid.uuid4().hex[:8]

    async def relay(self, **kwargs) -> OutboxRelay:
        broker = make_broker(self.nats_url)
        await broker.connect()
        self.brokers.append(broker)
        kwargs.setdefault("sweep_seconds", 0.5)
        relay = OutboxRelay(self.engine, self.tables, broker, **kwargs)
        await relay.start()
        self.relays.append(relay)
        return relay

    async def consumer(self, policy: ConsumerPolicy | None = None, handler=None) -> None:
        broker = make_broker(self.nats_url)
        subscribe_events(
            broker,
            service="testsvc",
            purpose=f"effects-{self.durable_suffix}",
            subject=SUBJECT,
            tables=self.tables,
            sessionmaker=self.sessionmaker,
            handler=handler or recording_handler(self.effects),
            policy=policy or ConsumerPolicy(ack_wait_seconds=5),
        )
        await broker.start()
        self.brokers.append(broker)

    async def write(self, outbox, events_per_tx: list[list[UserUpdated]]) -> list[str]:
        ids = []
        for batch in events_per_tx:
            async with self.sessionmaker() as session, session.begin():
                for payload in batch:
                    ids.append((await outbox.add(session, payload)).id)
        return ids

    async def close(self):
        for relay in self.relays:
            await relay.stop()
        for broker in self.brokers:
            await broker.stop()


@pytest.fixture
async def harness(engine, nats_url, backbone, js):
    tables, effects, _ = backbone
    h = Harness(engine, nats_url, tables, effects)
    yield h
    await h.close()


async def effects_reach(h: Harness, n: int, timeout: float = 60.0) -> float:
    async def done() -> bool:
        return (await count_effects(h.engine, h.effects))[0] >= n

    return await wait_until(done, timeout=timeout)


async def test_thousand_events_arrive_once_in_order_per_aggregate(harness, backbone):
    _, effects, outbox = backbone
    aggregates = [uuid.uuid4() for _ in range(20)]
    batches = [
        [event(aggregates[(t * 10 + i) % 20], f"{t * 10 + i:04d}") for i in range(10)]
        for t in range(100)
    ]
    await harness.consumer()
    await harness.relay()
    ids = await harness.write(outbox, batches)
    assert len(ids) == 1000

    await effects_reach(harness, 1000)
    await asyncio.sleep(0.5)  # anything extra would show up now
    assert await count_effects(harness.engine, effects) == (1000, 1000)
    async with harness.engine.connect() as conn:
        rows = (await conn.execute(select(effects).order_by(effects.c.seq))).all()
    per_aggregate: dict[str, list[str]] = {}
    for row in rows:
        per_aggregate.setdefault(row.subject_id, []).append(row.marker)
    assert len(per_aggregate) == 20
    for markers in per_aggregate.values():
        assert markers == sorted(markers)


async def test_writes_succeed_while_nats_is_down_and_every_event_lands_once(
    harness, backbone, nats_server
):
    if not nats_server.restartable:
        pytest.skip("NATS is external here; it cannot be stopped by the test")
    _, effects, outbox = backbone
    await harness.consumer()
    await harness.relay(publish_timeout=0.5)
    aggregate = uuid.uuid4()
    await harness.write(outbox, [[event(aggregate, "before")]])
    await effects_reach(harness, 1)

    nats_server.stop()
    try:
        # Every write commits although the broker is gone: events wait in the outbox.
        ids = await harness.write(
            outbox, [[event(uuid.uuid4(), f"down-{i:03d}")] for i in range(200)]
        )
        assert len(ids) == 200
        async with harness.engine.connect() as conn:
            unsent = await conn.scalar(
                select(func.count())
                .select_from(harness.tables.outbox)
                .where(harness.tables.outbox.c.sent_at.is_(None))
            )
        assert unsent >= 190  # at most a few slipped out before the stop took effect
    finally:
        nats_server.start()

    await effects_reach(harness, 201, timeout=90)
    await asyncio.sleep(1.0)
    assert await count_effects(harness.engine, effects) == (201, 201)


async def test_two_relays_at_once_produce_no_duplicate_effects(harness, backbone, js):
    _, effects, outbox = backbone
    await harness.consumer()
    await harness.relay(batch_size=20)
    await harness.relay(batch_size=20)
    aggregates = [uuid.uuid4() for _ in range(5)]
    batches = [[event(aggregates[i % 5], f"{i:04d}")] for i in range(300)]
    await asyncio.gather(harness.write(outbox, batches[:150]), harness.write(outbox, batches[150:]))
    await effects_reach(harness, 300)
    await asyncio.sleep(0.5)
    assert await count_effects(harness.engine, effects) == (300, 300)
    # JetStream dedupe plus SKIP LOCKED: the stream holds each event once.
    info = await js.stream_info("IDENTITY")
    assert info.state.messages == 300
    assert sum(relay.published for relay in harness.relays) == 300


CRASHING_CONSUMER = """
import asyncio, os, sys
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from agentmesh.shared.events.inbox import ConsumerPolicy, subscribe_events
from agentmesh.shared.testing.backbone import backbone_schema, make_broker, recording_handler

database_url, nats_url, purpose = sys.argv[1:4]
_, tables, effects = backbone_schema("backbone_test")
record = recording_handler(effects)

async def crash_after_commit(session, envelope, payload):
    await record(session, envelope, payload)
    # Die between the commit and the ack, as a killed replica would.
    sa_event.listen(session.sync_session, "after_commit", lambda s: os._exit(17))

async def main():
    engine = create_async_engine(database_url)
    broker = make_broker(nats_url)
    subscribe_events(broker, service="testsvc", purpose=purpose, subject="identity.user.updated",
                     tables=tables, sessionmaker=async_sessionmaker(engine),
                     handler=crash_after_commit, policy=ConsumerPolicy(ack_wait_seconds=2))
    await broker.start()
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_consumer_crash_before_ack_redelivers_and_applies_once(
    harness, backbone, database_url, nats_url, js
):
    import sys

    _, effects, outbox = backbone
    await harness.relay()
    await harness.write(outbox, [[event(uuid.uuid4(), "crash-me")]])
    purpose = f"effects-{harness.durable_suffix}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_CONSUMER, database_url, nats_url, purpose
    )
    assert await asyncio.wait_for(proc.wait(), 60) == 17  # it crashed after committing
    assert await count_effects(harness.engine, effects) == (1, 1)

    # A healthy replica of the same durable consumer gets the unacked event again...
    await harness.consumer(policy=ConsumerPolicy(ack_wait_seconds=2))
    consumer = f"testsvc-{purpose}"

    async def acked() -> bool:
        info = await js.consumer_info("IDENTITY", consumer)
        # Two deliveries of the one event: the crashed one and the redelivery, now acked.
        return info.delivered.consumer_seq >= 2 and info.ack_floor.consumer_seq >= 2

    await wait_until(acked, timeout=30)
    # ...and the inbox makes the redelivery a no-op.
    assert await count_effects(harness.engine, effects) == (1, 1)


async def test_poison_event_goes_to_dlq_and_later_events_flow(harness, backbone, js):
    _, effects, outbox = backbone
    policy = ConsumerPolicy(max_deliver=3, backoff_seconds=0.05, ack_wait_seconds=5)
    await harness.consumer(policy=policy)
    await harness.relay()
    dlq = await js.subscribe("dlq.testsvc.>", stream="DLQ")
    poison_id = (await harness.write(outbox, [[event(uuid.uuid4(), "poison-1")]]))[0]

    message = await dlq.next_msg(timeout=30)
    assert message.subject == f"dlq.testsvc.{SUBJECT}"
    assert json.loads(message.data)["id"] == poison_id
    assert message.headers["AgentMesh-Deliveries"] == "3"
    assert "ValueError" in message.headers["AgentMesh-Error"]
    assert message.headers["AgentMesh-Consumer"] == f"testsvc-effects-{harness.durable_suffix}"

    await harness.write(outbox, [[event(uuid.uuid4(), "healthy")]])
    await effects_reach(harness, 1)
    async with harness.engine.connect() as conn:
        markers = (await conn.execute(select(effects.c.marker))).scalars().all()
    assert markers == ["healthy"]


async def test_rolled_back_transaction_publishes_nothing(harness, backbone, js):
    _, effects, outbox = backbone
    await harness.consumer()
    await harness.relay()
    async with harness.sessionmaker() as session:
        await session.begin()
        rolled_back = await outbox.add(session, event(uuid.uuid4(), "rolled-back"))
        await session.rollback()
    committed = (await harness.write(outbox, [[event(uuid.uuid4(), "committed")]]))[0]

    await effects_reach(harness, 1)
    await asyncio.sleep(1.0)  # one more sweep: the rolled-back event must not appear
    async with harness.engine.connect() as conn:
        applied = (await conn.execute(select(effects.c.event_id))).scalars().all()
        outbox_ids = (await conn.execute(select(harness.tables.outbox.c.event_id))).scalars().all()
    assert applied == [committed]
    assert rolled_back.id not in outbox_ids
    info = await js.stream_info("IDENTITY")
    assert info.state.messages == 1


async def test_relay_prunes_sent_rows_after_retention(harness, backbone):
    _, _, outbox = backbone
    relay = await harness.relay(retention_seconds=0)
    await harness.write(outbox, [[event(uuid.uuid4(), "old")]])

    async def all_sent() -> bool:
        async with harness.engine.connect() as conn:
            return not await conn.scalar(
                select(func.count())
                .select_from(harness.tables.outbox)
                .where(harness.tables.outbox.c.sent_at.is_(None))
            )

    await wait_until(all_sent)
    await relay.prune()
    async with harness.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(harness.tables.outbox)) == 0


async def test_streams_capture_events_but_not_rpc_subjects(js):
    info = await js.stream_info("AGENTS")
    assert "agents.agent.>" in info.config.subjects
    with pytest.raises(NotFoundError):
        await js.find_stream_name_by_subject("agents.rpc.knowledge.search")
    assert info.config.duplicate_window >= 120


async def test_an_unpublishable_event_holds_back_only_its_own_aggregate(harness, backbone):
    _, effects, outbox = backbone
    await harness.consumer()
    await harness.relay()
    huge_owner, other = uuid.uuid4(), uuid.uuid4()
    # Over NATS's 1 MiB max_payload: this event can never be published.
    await harness.write(outbox, [[event(huge_owner, "x" * 1_200_000)]])
    await harness.write(
        outbox,
        [[event(huge_owner, "after-huge")], [event(other, "fine-1")], [event(other, "fine-2")]],
    )
    await effects_reach(harness, 2)
    await asyncio.sleep(1.0)
    async with harness.engine.connect() as conn:
        markers = sorted((await conn.execute(select(effects.c.marker))).scalars().all())
        error = await conn.scalar(
            select(harness.tables.outbox.c.last_error)
            .where(
                harness.tables.outbox.c.subject_id == str(huge_owner),
                harness.tables.outbox.c.sent_at.is_(None),
            )
            .order_by(harness.tables.outbox.c.id)
            .limit(1)
        )
    # The other aggregate flowed; the huge event's aggregate keeps its order (held back).
    assert markers == ["fine-1", "fine-2"]
    assert "MaxPayload" in error

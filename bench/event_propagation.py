"""Event commit -> consumer effect latency through outbox, relay, JetStream and inbox.

    uv run python -m bench.event_propagation [--events 500] [--rate 100]

Each event is written in its own transaction; the clock starts at its commit and stops
when the consumer's transaction (effect + inbox row) commits. Same process, same clock.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from agentmesh.shared.events.contracts import UserUpdated
from agentmesh.shared.events.inbox import ConsumerPolicy, subscribe_events
from agentmesh.shared.events.outbox import Outbox
from agentmesh.shared.events.relay import OutboxRelay
from agentmesh.shared.events.streams import ensure_streams
from agentmesh.shared.testing.backbone import (
    backbone_schema,
    create_backbone_schema,
    make_broker,
    recording_handler,
)
from bench.servers import machine, percentile, servers


async def main(events: int, rate: float) -> dict[str, float]:
    async with servers() as (database_url, nats_url):
        engine = create_async_engine(database_url, pool_size=10)
        metadata, tables, effects = backbone_schema("bench_events")
        await create_backbone_schema(engine, metadata, tables)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        outbox = Outbox(tables, source="identity")
        committed: dict[str, float] = {}
        applied: dict[str, float] = {}
        record = recording_handler(effects)

        async def handler(session, envelope, payload):
            await record(session, envelope, payload)

            def stamp(_session: object) -> None:
                applied.setdefault(envelope.id, time.perf_counter())

            sa_event.listen(session.sync_session, "after_commit", stamp)

        relay_broker = make_broker(nats_url)
        await relay_broker.connect()
        await ensure_streams(relay_broker.config.connection_state.stream)
        consumer_broker = make_broker(nats_url)
        subscribe_events(
            consumer_broker,
            service="bench",
            purpose="latency",
            subject="identity.user.updated",
            tables=tables,
            sessionmaker=sessionmaker,
            handler=handler,
            policy=ConsumerPolicy(batch_size=16),
        )
        await consumer_broker.start()
        relay = OutboxRelay(engine, tables, relay_broker, sweep_seconds=5)
        await relay.start()
        try:
            interval = 1 / rate
            for i in range(events):
                async with sessionmaker() as session, session.begin():
                    envelope = await outbox.add(
                        session,
                        UserUpdated(user_id=uuid.uuid4(), email="b@example.com", name=f"{i}"),
                    )
                committed[envelope.id] = time.perf_counter()
                await asyncio.sleep(interval)
            deadline = time.monotonic() + 60
            while len(applied) < events and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await relay.stop()
            await consumer_broker.stop()
            await relay_broker.stop()
            await engine.dispose()
    latencies = [(applied[i] - committed[i]) * 1000 for i in committed if i in applied]
    figures = {
        "events": events,
        "delivered": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }
    print(f"event commit -> consumer effect ({machine()})")
    print(f"  {events} events, one per transaction, {rate:.0f}/s, one relay, one consumer")
    print(
        f"  delivered {figures['delivered']}/{events}; p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.1f} ms"
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.rate))

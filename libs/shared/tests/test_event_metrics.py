"""The event backbone's metrics, read from ``GET /metrics``: outbox backlog, published and
failed publishes, consumer deliveries by outcome, redeliveries, the DLQ and the lag."""

from __future__ import annotations

import uuid

import pytest

from agentmesh.shared.events.inbox import ConsumerPolicy
from agentmesh.shared.events.metrics import ConsumerLagMonitor
from agentmesh.shared.events.relay import OutboxRelay
from agentmesh.shared.testing.backbone import wait_until
from agentmesh.shared.testing.fixtures import app_client

from .test_event_backbone import Harness, effects_reach, event
from .test_event_backbone import js as js
from .test_metrics import probe, sample


@pytest.fixture
async def harness(engine, nats_url, backbone, js):
    tables, effects, _ = backbone
    h = Harness(engine, nats_url, tables, effects)
    yield h
    await h.close()


async def scrape() -> str:
    async with app_client(probe("eventmetricsprobe")) as client:
        page = await client.get("/metrics")
    assert page.status_code == 200
    return page.text


def value(page: str, name: str, **labels: str) -> float:
    return sample(page, name, **labels) or 0.0


async def test_outbox_backlog_and_publishes_show_up(harness, backbone):
    _, _, outbox = backbone
    service = {"service": f"outbox-{uuid.uuid4().hex[:6]}"}
    before = await scrape()
    await harness.write(outbox, [[event(uuid.uuid4(), f"m{i}")] for i in range(3)])
    # A relay that is not running yet measures the backlog of three.
    idle = OutboxRelay(harness.engine, harness.tables, broker=None, service=service["service"])
    waiting, oldest = await idle.measure()
    assert waiting == 3 and oldest >= 0
    page = await scrape()
    assert value(page, "agentmesh_outbox_waiting", **service) == 3

    await harness.relay(service=service["service"], stats_seconds=0)

    async def drained() -> bool:
        text = await scrape()
        return (
            value(text, "agentmesh_outbox_published_total", **service) == 3
            and value(text, "agentmesh_outbox_waiting", **service) == 0
        )

    await wait_until(drained)
    page = await scrape()
    assert value(page, "agentmesh_outbox_oldest_age_seconds", **service) == 0
    assert value(before, "agentmesh_outbox_published_total", **service) == 0


async def test_an_unpublishable_event_counts_as_a_publish_error(harness, backbone):
    _, _, outbox = backbone
    service = {"service": f"outbox-{uuid.uuid4().hex[:6]}", "reason": "unpublishable"}
    await harness.relay(service=service["service"])
    await harness.write(outbox, [[event(uuid.uuid4(), "x" * 1_200_000)]])  # over max_payload

    async def counted() -> bool:
        return value(await scrape(), "agentmesh_outbox_publish_errors_total", **service) >= 1

    await wait_until(counted)
    # The row stays unsent, so the backlog and its age show it.
    relay = harness.relays[-1]
    waiting, oldest = await relay.measure()
    assert waiting == 1 and oldest > 0


async def test_deliveries_redeliveries_dead_letters_and_lag_show_up(harness, backbone, js):
    _, _, outbox = backbone
    consumer = f"testsvc-effects-{harness.durable_suffix}"
    labels = {"service": "testsvc", "consumer": consumer}
    policy = ConsumerPolicy(max_deliver=3, backoff_seconds=0.05, ack_wait_seconds=5)
    await harness.consumer(policy=policy)
    await harness.relay()
    await harness.write(outbox, [[event(uuid.uuid4(), "fine-1")], [event(uuid.uuid4(), "fine-2")]])
    await harness.write(outbox, [[event(uuid.uuid4(), "poison-1")]])
    await effects_reach(harness, 2)

    async def dead_lettered() -> bool:
        page = await scrape()
        return value(page, "agentmesh_consumer_dead_lettered_total", **labels) == 1

    await wait_until(dead_lettered)
    page = await scrape()
    deliveries = "agentmesh_consumer_deliveries_total"
    assert value(page, deliveries, outcome="processed", **labels) == 2
    assert value(page, deliveries, outcome="failed", **labels) == 2  # deliveries 1 and 2
    assert value(page, deliveries, outcome="dead_lettered", **labels) == 1
    assert value(page, "agentmesh_consumer_redeliveries_total", **labels) == 2

    # The lag: events published while no replica of the consumer runs.
    monitor = ConsumerLagMonitor(interval=3600)
    monitor.add("testsvc", "IDENTITY", consumer)
    await monitor.refresh(js)
    assert value(await scrape(), "agentmesh_consumer_pending", **labels) == 0
    for broker in harness.brokers[:1]:  # the consumer's broker: its durable stays
        await broker.stop()
    await harness.write(outbox, [[event(uuid.uuid4(), f"later-{i}")] for i in range(4)])

    async def lagging() -> bool:
        await monitor.refresh(js)
        return value(await scrape(), "agentmesh_consumer_pending", **labels) == 4

    await wait_until(lagging)


async def test_lag_of_a_missing_consumer_is_left_alone(js):
    monitor = ConsumerLagMonitor(interval=3600, timeout=1)
    monitor.add("testsvc", "IDENTITY", "testsvc-never-created")
    await monitor.refresh(js)  # no error, no series
    assert (
        sample(await scrape(), "agentmesh_consumer_pending", consumer="testsvc-never-created")
        is None
    )

"""Ingest jobs show up in the agents service's ``GET /metrics``: queued, running, finished
by status and chunks embedded; and the shared outbox and consumer gauges are wired."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentmesh.agents.app import create_app
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)

from .test_ingest_jobs import KBS, new_kb, quiet_queue, settled, upload


@pytest.fixture
def make_agents(common_settings, token_issuer):
    """An agents replica whose database and NATS gauges refresh every 0.2 s."""
    common = common_settings.model_copy(
        update={"jwks_url": token_issuer.jwks_url, "metrics_refresh_seconds": 0.2}
    )

    @contextlib.asynccontextmanager
    async def make(**overrides):
        settings = AgentsSettings(
            common=common,
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
            **overrides,
        )
        app = create_app(settings)
        async with app_client(app) as client:
            client.app = app
            yield client

    return make


def value(page: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


async def scrape(client) -> str:
    page = await client.get("/metrics")
    assert page.status_code == 200
    return page.text


async def until(client, check, attempts: int = 1500) -> str:
    for _ in range(attempts):
        page = await scrape(client)
        if check(page):
            return page
        await asyncio.sleep(0.02)
    raise AssertionError("the metrics never showed it")


async def test_ingest_jobs_show_up_in_the_metrics(make_agents, token_issuer):
    headers = token_issuer.headers()

    def body(name: str) -> str:
        return "\n\n".join(f"{name} line {i}: parcels, refunds, invoices." for i in range(300))

    finished = "agentmesh_agents_ingest_jobs_finished_total"
    embedded = "agentmesh_agents_ingest_chunks_embedded_total"
    async with make_agents(ingest_concurrency=0) as api:  # only queues
        await quiet_queue(api)
        kb_id = await new_kb(api, headers, chunk_size=100, chunk_overlap=0)
        first = await upload(api, headers, kb_id, body("One"), "one.md")
        second = await upload(api, headers, kb_id, body("Two"), "two.md")
        async with make_agents(ingest_poll_seconds=0.1) as worker:
            before = await scrape(worker)
            # One owner runs one job at a time: one document indexing, one waiting.
            await until(
                worker,
                lambda p: (
                    value(p, "agentmesh_agents_ingest_jobs_running") == 1
                    and value(p, "agentmesh_agents_ingest_jobs_queued") == 1
                ),
            )
            done = [await settled(worker, headers, kb_id, d) for d in (first, second)]
            assert [d["status"] for d in done] == ["ready", "ready"]
            chunks = sum(d["chunk_count"] for d in done)
            broken = {"file": ("broken.pdf", b"%PDF-1.4 not really a pdf", "application/pdf")}
            response = await worker.post(f"{KBS}/{kb_id}/documents", headers=headers, files=broken)
            assert response.status_code == 202, response.text
            failed = await settled(worker, headers, kb_id, response.json()["id"])
            assert failed["status"] == "failed"
            after = await until(
                worker,
                lambda p: (
                    value(p, "agentmesh_agents_ingest_jobs_running") == 0
                    and value(p, "agentmesh_agents_ingest_jobs_queued") == 0
                ),
            )

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert grew(finished, status="ready") == 2
    assert grew(finished, status="failed") == 1
    assert grew(embedded, embedder="local") == chunks > 0


async def test_the_outbox_and_consumer_gauges_of_a_service_are_refreshed(make_agents):
    async with make_agents(ingest_concurrency=0) as agents:
        page = await until(
            agents,
            lambda p: (
                value(p, "agentmesh_consumer_pending", service="agents", consumer="agents-erasure")
                is not None
                and value(p, "agentmesh_outbox_waiting", service="agents") is not None
            ),
        )
    assert (
        value(page, "agentmesh_consumer_ack_pending", service="agents", consumer="agents-erasure")
        is not None
    )
    assert value(page, "agentmesh_outbox_oldest_age_seconds", service="agents") is not None

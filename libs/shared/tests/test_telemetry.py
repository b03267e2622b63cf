"""A trace crosses NATS: the consumer's span descends from the publishing request's span."""

from __future__ import annotations

import uuid

import pytest
from fastapi import APIRouter, Request
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agentmesh.shared.db import Session
from agentmesh.shared.events.contracts import UserUpdated
from agentmesh.shared.runtime import ServiceRuntime
from agentmesh.shared.settings import ServiceSettings
from agentmesh.shared.testing.backbone import wait_until
from agentmesh.shared.testing.fixtures import app_client


@pytest.fixture
async def js(nats_url):
    import nats

    from agentmesh.shared.events.streams import ensure_streams

    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    await nc.jetstream().purge_stream("IDENTITY")
    yield nc.jetstream()
    await nc.close()


async def test_consumer_span_is_in_the_request_trace(backbone, database_url, nats_url, js):
    tables, _, _ = backbone
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = ServiceSettings(
        common={
            "env": "test",
            "database_url": database_url,
            "nats_url": nats_url,
            "outbox_sweep_seconds": 0.5,
        }
    )
    runtime = ServiceRuntime(
        "identity", settings, tables=tables, tracer_provider=provider, configure_logs=False
    )
    seen: dict[str, int] = {}

    async def handler(session, envelope, payload):
        seen["trace_id"] = trace.get_current_span().get_span_context().trace_id
        seen["span_id"] = trace.get_current_span().get_span_context().span_id

    runtime.subscribe(
        purpose=f"trace-{uuid.uuid4().hex[:6]}", subject="identity.user.>", handler=handler
    )
    router = APIRouter()

    @router.post("/emit")
    async def emit(request: Request, session: Session) -> dict:
        await request.app.state.outbox.add(
            session, UserUpdated(user_id=uuid.uuid4(), email="t@example.com", name="t")
        )
        return {"ok": True}

    app = runtime.create_app(title="trace test", routers=[router])
    async with app_client(app) as client:
        response = await client.post("/emit")
        assert response.status_code == 200

        async def handled() -> bool:
            return "span_id" in seen

        await wait_until(handled, timeout=30)

    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind == SpanKind.SERVER and "/emit" in s.name)
    by_id = {s.context.span_id: s for s in spans}
    consumer = by_id[seen["span_id"]]
    assert consumer.kind == SpanKind.CONSUMER
    assert consumer.context.trace_id == server.context.trace_id
    # Walk up: consumer -> publish (relay) -> ... -> the request's server span.
    ancestors = []
    current = consumer
    while current.parent is not None and current.parent.span_id in by_id:
        current = by_id[current.parent.span_id]
        ancestors.append(current)
    assert server in ancestors
    assert any(s.kind == SpanKind.PRODUCER for s in ancestors)
    # SQLAlchemy spans: the request's INSERT into the outbox is part of the same trace.
    sql = [s for s in spans if s.attributes and s.attributes.get("db.system") == "postgresql"]
    assert any(
        s.context.trace_id == server.context.trace_id
        and "outbox" in s.attributes.get("db.statement", "")
        for s in sql
    )


async def test_each_request_gets_exactly_one_server_span():
    """One server span per request and no span per ASGI send/receive message."""
    from agentmesh.shared.settings import CommonSettings

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = ServiceSettings(common=CommonSettings(env="test"))
    runtime = ServiceRuntime(
        "demo",
        settings,
        use_database=False,
        use_broker=False,
        tracer_provider=provider,
        configure_logs=False,
    )
    router = APIRouter()

    @router.get("/ping")
    async def ping() -> dict:
        return {"pong": True}

    app = runtime.create_app(title="spans", routers=[router])
    async with app_client(app) as client:
        assert (await client.get("/ping")).status_code == 200
    servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(servers) == 1
    assert not [s for s in exporter.get_finished_spans() if s.name.endswith((" send", " receive"))]


def test_without_an_exporter_spans_are_not_recorded_but_trace_ids_flow(monkeypatch):
    from opentelemetry import propagate

    from agentmesh.shared import telemetry

    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_SAMPLER",
    ):
        monkeypatch.delenv(name, raising=False)
    upstream = telemetry.tracer_provider_for(f"t-{uuid.uuid4().hex}").get_tracer("a")
    downstream = telemetry.tracer_provider_for(f"t-{uuid.uuid4().hex}").get_tracer("b")
    with upstream.start_as_current_span("request") as parent:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    assert not parent.is_recording() and parent.get_span_context().is_valid
    with downstream.start_as_current_span("work", context=propagate.extract(headers)) as child:
        assert not child.is_recording()
    assert child.get_span_context().trace_id == parent.get_span_context().trace_id
    sampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with downstream.start_as_current_span("work", context=propagate.extract(sampled)) as on:
        assert on.is_recording()  # sampled upstream (an exporting service): the trace goes on

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")  # the operator's choice wins
    with (
        telemetry.tracer_provider_for(f"t-{uuid.uuid4().hex}")
        .get_tracer("c")
        .start_span("x") as sampled
    ):
        assert sampled.is_recording()


async def test_a_service_that_exports_nothing_still_continues_and_starts_traces(monkeypatch):
    """With no exporter the app gets the lean trace-context middleware, not the
    instrumentation: the incoming trace id and sampled flag reach the handler (and through
    it logs and outgoing calls); a request without one gets a trace id of its own."""
    from opentelemetry import propagate

    from agentmesh.shared import telemetry
    from agentmesh.shared.settings import CommonSettings

    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_SAMPLER",
    ):
        monkeypatch.delenv(name, raising=False)
    provider = telemetry.tracer_provider_for(f"t-{uuid.uuid4().hex}")
    assert telemetry.silent(provider) and not telemetry.silent(TracerProvider())
    settings = ServiceSettings(common=CommonSettings(env="test"))
    runtime = ServiceRuntime(
        "demo",
        settings,
        use_database=False,
        use_broker=False,
        tracer_provider=provider,
        configure_logs=False,
    )
    router = APIRouter()

    @router.get("/trace")
    async def current() -> dict:
        span = trace.get_current_span().get_span_context()
        outgoing: dict[str, str] = {}
        propagate.inject(outgoing)
        return {
            "trace_id": f"{span.trace_id:032x}",
            "sampled": span.trace_flags.sampled,
            "traceparent": outgoing.get("traceparent", ""),
        }

    app = runtime.create_app(title="demo", routers=[router])
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    async with app_client(app) as client:
        for flags, sampled in (("01", True), ("00", False)):
            got = (
                await client.get(
                    "/trace", headers={"traceparent": f"00-{trace_id}-{parent_id}-{flags}"}
                )
            ).json()
            assert got["trace_id"] == trace_id and got["sampled"] is sampled
            assert got["traceparent"].startswith(f"00-{trace_id}-")
            assert got["traceparent"].endswith(f"-{flags}") and parent_id not in got["traceparent"]
        first, second = [(await client.get("/trace")).json() for _ in range(2)]
    assert int(first["trace_id"], 16) and first["trace_id"] != second["trace_id"]
    assert not first["sampled"]

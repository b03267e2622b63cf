"""OpenTelemetry: traces for FastAPI, SQLAlchemy, httpx and FastStream, exported over OTLP
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""

from __future__ import annotations

import os

from fastapi import FastAPI
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import TracerProvider as TracerProviderApi
from sqlalchemy.ext.asyncio import AsyncEngine

_providers: dict[str, TracerProviderApi] = {}


def tracer_provider_for(service: str) -> TracerProviderApi:
    """The process's tracer provider for ``service``, exporting over OTLP when configured.

    Without an OTLP endpoint spans are still created (so trace ids reach the logs and
    propagate across services) but neither recorded nor exported.
    """
    if service in _providers:
        return _providers[service]
    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                     or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))  # fmt: skip
    # With nowhere to send spans, record none: a span's attributes, events and timing cost
    # CPU on every request and statement (about a tenth of a chat turn's), for nothing. The
    # spans still exist, non-recording, so trace ids still propagate and reach the logs.
    # OTEL_TRACES_SAMPLER, when set, decides instead (the SDK reads it).
    # Parent-based: a request that arrives sampled (an exporting service upstream) is still
    # recorded, so the trace goes on through this service to the exporting ones after it.
    default = ParentBased(ALWAYS_OFF)
    sampler = None if exporting or os.environ.get("OTEL_TRACES_SAMPLER") else default
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: f"agentmesh-{service}"}), sampler=sampler
    )
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if not _providers:
        trace.set_tracer_provider(provider)
    _providers[service] = provider
    return provider


def broker_middleware(provider: TracerProviderApi) -> NatsTelemetryMiddleware:
    """FastStream's NATS middleware: publish spans inject, consume spans extract context."""
    return NatsTelemetryMiddleware(tracer_provider=provider)


def instrument_app(app: FastAPI, provider: TracerProviderApi) -> None:
    # No span per ASGI send/receive: a streamed answer would get one per token.
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls="health/live,health/ready",
        exclude_spans=["receive", "send"],
    )


def instrument_engine(engine: AsyncEngine, provider: TracerProviderApi) -> None:
    """Trace every statement of ``engine`` with ``provider``.

    Per engine, not through ``SQLAlchemyInstrumentor().instrument()``: that one is a
    process-wide singleton (a second engine would silently go untraced) and declares
    SQLAlchemy < 2.1, doing nothing at all on 2.1. Its engine hooks work on 2.1; the
    telemetry test asserts a database span.
    """
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy",
                              tracer_provider=provider)  # fmt: off
    usage = get_meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
        name="db.client.connections.usage", unit="connections",
        description="Connections in the state described by the state attribute.",
    )  # fmt: off
    EngineTracer(tracer, engine.sync_engine, usage)


def instrument_httpx(provider: TracerProviderApi) -> None:
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)

"""OpenTelemetry: traces for FastAPI, SQLAlchemy, httpx and FastStream, exported over OTLP
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""

from __future__ import annotations

import os

from fastapi import FastAPI
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace import TracerProvider as TracerProviderApi
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

_providers: dict[str, TracerProviderApi] = {}
#: Providers that can never record a span: no exporter, no sampler the operator chose.
_silent: set[int] = set()
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)


def tracer_provider_for(service: str) -> TracerProviderApi:
    """The process's tracer provider for ``service``, exporting over OTLP when configured.

    Without an OTLP endpoint spans are still created (so trace ids reach the logs and
    propagate across services) but neither recorded nor exported.
    """
    if service in _providers:
        return _providers[service]
    exporting = bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
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
    if sampler is default:
        _silent.add(id(provider))
    return provider


def silent(provider: TracerProviderApi) -> bool:
    """Whether nothing ``provider`` traces can ever be exported: it is this module's, with
    no OTLP endpoint and no ``OTEL_TRACES_SAMPLER``. A provider given by the caller (a
    test's in-memory exporter) is never silent."""
    return id(provider) in _silent


class TraceContextMiddleware:
    """A request's trace context without the work of a span, for a service that exports
    none: the incoming ``traceparent`` (or a new trace id) becomes the current span
    context, so logs carry the trace id and calls to other services continue the trace,
    sampled flag included. What the instrumentation would add (a non-recording span, its
    attributes and metrics) is invisible without an exporter and cost about a tenth of a
    read request's CPU (bench.read_path --profile)."""

    _ids = RandomIdGenerator()

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in (b"traceparent", b"tracestate", b"baggage")
        }
        incoming = propagate.extract(carrier) if carrier else context.get_current()
        parent = trace.get_current_span(incoming).get_span_context()
        span = NonRecordingSpan(
            SpanContext(
                trace_id=parent.trace_id if parent.is_valid else self._ids.generate_trace_id(),
                span_id=self._ids.generate_span_id(),
                is_remote=False,
                trace_flags=parent.trace_flags if parent.is_valid else _UNSAMPLED,
                trace_state=parent.trace_state if parent.is_valid else None,
            )
        )
        token = context.attach(trace.set_span_in_context(span, incoming))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)


def broker_middleware(provider: TracerProviderApi) -> NatsTelemetryMiddleware:
    """FastStream's NATS middleware: publish spans inject, consume spans extract context."""
    return NatsTelemetryMiddleware(tracer_provider=provider)


def instrument_app(app: FastAPI, provider: TracerProviderApi) -> None:
    if silent(provider):
        app.add_middleware(TraceContextMiddleware)
        return
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
    telemetry test asserts a database span. A silent provider's statements are not
    traced: their spans could never be seen.
    """
    if silent(provider):
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", tracer_provider=provider)
    usage = get_meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
        name="db.client.connections.usage",
        unit="connections",
        description="Connections in the state described by the state attribute.",
    )
    EngineTracer(tracer, engine.sync_engine, usage)


def instrument_httpx(provider: TracerProviderApi) -> None:
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)

"""OpenTelemetry: traces for FastAPI, SQLAlchemy, httpx and FastStream, exported over OTLP
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""

from __future__ import annotations

import os

from fastapi import FastAPI
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import TracerProvider as TracerProviderApi
from sqlalchemy.ext.asyncio import AsyncEngine

_providers: dict[str, TracerProviderApi] = {}


def tracer_provider_for(service: str) -> TracerProviderApi:
    """The process's tracer provider for ``service``, exporting over OTLP when configured.

    Without an OTLP endpoint spans are still created (so trace ids reach the logs and
    propagate across services) but not exported.
    """
    if service in _providers:
        return _providers[service]
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"agentmesh-{service}"}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
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
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="health/live,health/ready"
    )


def instrument_engine(engine: AsyncEngine, provider: TracerProviderApi) -> None:
    # The instrumentor declares SQLAlchemy < 2.1 and would silently do nothing on 2.1;
    # its event hooks work on 2.1 (the telemetry test asserts a database span).
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )


def instrument_httpx(provider: TracerProviderApi) -> None:
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)

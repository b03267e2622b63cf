"""The end-to-end journey's fixtures: the platform of ``tests/conftest.py`` with every
service tracing into one in-memory exporter, a local OpenAI-compatible model server,
and a direct database connection for checking erasure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentmesh.shared.testing.openai_server import FakeOpenAI

#: The fake model answers every user turn that offers tools with a ``knowledge_search``
#: call for this query, and a tool's result by quoting it.
SEARCH_QUERY = "launch code of the Perihelion probe"


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def untraced_test_client() -> Iterator[None]:
    """httpx is instrumented once per process, with the provider of the first service
    started in it; an earlier test's records nothing (no exporter), so the journey's own
    httpx client would start unsampled traces, and every service would honour that.
    Uninstrumented here, it is instrumented again by the journey's first service, with
    one of this journey's recording providers; the earlier state comes back after."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    provider = getattr(instrumentor, "_tracer_provider", None)
    was = instrumentor.is_instrumented_by_opentelemetry
    if was:
        instrumentor.uninstrument()
    yield
    if was:
        instrumentor.instrument(tracer_provider=provider)


@pytest.fixture
def service_options(span_exporter, untraced_test_client) -> dict[str, dict[str, Any]]:
    """Each service its own tracer provider (named like in production), one exporter."""
    options: dict[str, dict[str, Any]] = {}
    for name in ("identity", "agents", "chat", "gateway"):
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"agentmesh-{name}"}))
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        options[name] = {"tracer_provider": provider}
    return options


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeOpenAI]:
    """The model behind the users' ``openai`` provider, over real HTTP on loopback."""
    call = {"name": "knowledge_search", "arguments": {"query": SEARCH_QUERY}}
    async with FakeOpenAI(api_key="sk-e2e-fake-key-1234", tool_call=call) as fake:
        yield fake


@pytest.fixture
async def database(migrated_database_url) -> AsyncIterator[AsyncEngine]:
    """The services' database, for asserting what is (not) stored."""
    engine = create_async_engine(migrated_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()

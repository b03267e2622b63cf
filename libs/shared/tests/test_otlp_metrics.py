"""With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the Prometheus metrics are also pushed over
OTLP/HTTP: a local server receives the protobuf export and finds the request counted."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentmesh.shared import otlp_metrics
from agentmesh.shared.runtime import ServiceRuntime
from agentmesh.shared.settings import CommonSettings, ServiceSettings
from agentmesh.shared.testing.fixtures import app_client
from agentmesh.shared.testing.recorder import Received, recording_server


def parsed(received: Received) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(received.body)
    return request


def attributes(point) -> dict[str, str]:
    return {a.key: a.value.string_value for a in point.attributes}


def probe():
    runtime = ServiceRuntime(
        "otlpprobe",
        ServiceSettings(common=CommonSettings(env="test", log_json=True)),
        use_database=False,
        use_broker=False,
        tracer_provider=TracerProvider(),
    )
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: int) -> dict:
        return {"id": item_id}

    return runtime.create_app(title="otlpprobe", routers=[router])


async def test_a_request_reaches_the_otlp_endpoint(monkeypatch):
    with recording_server() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        async with app_client(probe()) as client:
            assert (await client.get("/items/5")).status_code == 200

            def counted(received: Received) -> bool:
                if received.path != "/v1/metrics":
                    return False
                for metric in (
                    m
                    for rm in parsed(received).resource_metrics
                    for sm in rm.scope_metrics
                    for m in sm.metrics
                ):
                    if metric.name == "http_server_request_duration_seconds":
                        return any(
                            attributes(p).get("service") == "otlpprobe"
                            and attributes(p).get("http_route") == "/items/{item_id}"
                            and p.count >= 1
                            for p in metric.histogram.data_points
                        )
                return False

            received = await collector.wait_for(counted)
    assert received.headers["content-type"] == "application/x-protobuf"
    [resource] = {
        a.value.string_value
        for rm in parsed(received).resource_metrics
        for a in rm.resource.attributes
        if a.key == "service.name"
    }
    assert resource == "agentmesh-otlpprobe"


def test_counters_gauges_and_histograms_convert():
    registry = CollectorRegistry()
    Counter("jobs", "Jobs.", ["kind"], registry=registry).labels("a").inc(3)
    Gauge("depth", "Depth.", registry=registry).set(7)
    hist = Histogram("wait_seconds", "Wait.", buckets=(0.1, 1.0), registry=registry)
    for value in (0.05, 0.5, 0.5, 5):
        hist.observe(value)
    by_name = {m.name: m for m in otlp_metrics.convert(registry, 1, 2)}
    [jobs] = by_name["jobs"].data.data_points
    assert (jobs.value, dict(jobs.attributes)) == (3.0, {"kind": "a"})
    assert by_name["jobs"].data.is_monotonic and jobs.start_time_unix_nano > 1
    assert by_name["depth"].data.data_points[0].value == 7
    [wait] = by_name["wait_seconds"].data.data_points
    assert by_name["wait_seconds"].unit == "s"
    # Per-bucket counts (Prometheus's are cumulative), the last one for +Inf.
    assert (list(wait.bucket_counts), list(wait.explicit_bounds)) == ([1, 2, 1], [0.1, 1.0])
    assert wait.count == 4 and wait.sum == pytest.approx(6.05)


async def test_nothing_is_pushed_without_an_endpoint(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    async with app_client(probe()) as client:
        assert (await client.get("/items/1")).status_code == 200
        assert otlp_metrics._pusher is None

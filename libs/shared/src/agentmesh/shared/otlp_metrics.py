"""The Prometheus metrics, also pushed over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``) is set.

The metrics live in ``prometheus-client``'s registry (``GET /metrics`` reads it). Every
``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds (60 000 by default) a background thread
collects the same registry, turns each family into OpenTelemetry's metric data (counters
into cumulative monotonic sums, gauges into gauges, histograms into explicit-bucket
histograms, with the labels as attributes and the Prometheus family name as the metric
name) and hands it to the SDK's ``OTLPMetricExporter``, which owns the wire format,
retries, headers and compression (the ``OTEL_EXPORTER_OTLP_*`` variables). One exporter per
process, started by the first service's lifespan and flushed once more when the last one
stops.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import REGISTRY
from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger("agentmesh.otlp_metrics")

SCOPE = InstrumentationScope("agentmesh.metrics")
_UNITS = {"_seconds": "s", "_bytes": "By"}


def configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    )


#: A series' identity: its labels, sorted.
_Key = tuple[tuple[str, str], ...]


def _key(labels: dict[str, str]) -> _Key:
    return tuple(sorted(labels.items()))


def _unit(name: str) -> str:
    return next((unit for suffix, unit in _UNITS.items() if name.endswith(suffix)), "")


def convert(registry: CollectorRegistry, started_ns: int, now_ns: int) -> list[Metric]:
    """The registry's families as OpenTelemetry metrics (summaries and info skipped)."""
    metrics: list[Metric] = []
    for family in registry.collect():
        created = {
            _key(s.labels): int(s.value * 1e9)
            for s in family.samples
            if s.name == f"{family.name}_created"
        }

        def start(labels: dict[str, str], created: dict[_Key, int] = created) -> int:
            return created.get(_key(labels), started_ns)

        description, unit = family.documentation, _unit(family.name)
        if family.type == "counter":
            points = [
                NumberDataPoint(s.labels, start(s.labels), now_ns, s.value)
                for s in family.samples
                if s.name == f"{family.name}_total"
            ]
            data: Any = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
        elif family.type in ("gauge", "unknown"):
            points = [
                NumberDataPoint(s.labels, started_ns, now_ns, s.value)
                for s in family.samples
                if s.name == family.name
            ]
            data = Gauge(points)
        elif family.type == "histogram":
            data = Histogram(
                _histogram_points(family, start, now_ns), AggregationTemporality.CUMULATIVE
            )
        else:
            continue
        if data.data_points:
            metrics.append(Metric(family.name, description, unit, data))
    return metrics


def _histogram_points(family: Any, start: Any, now_ns: int) -> list[HistogramDataPoint]:
    series: dict[_Key, dict[str, Any]] = defaultdict(lambda: {"buckets": []})
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        entry = series[_key(labels)]
        entry["labels"] = labels
        if s.name == f"{family.name}_bucket":
            entry["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name == f"{family.name}_count":
            entry["count"] = int(s.value)
        elif s.name == f"{family.name}_sum":
            entry["sum"] = s.value
    points = []
    for entry in series.values():
        cumulative = sorted(entry["buckets"])
        counts, previous = [], 0.0
        for _, value in cumulative:  # Prometheus buckets are cumulative; OTLP's are not
            counts.append(int(value - previous))
            previous = value
        bounds = [bound for bound, _ in cumulative if bound != float("inf")]
        points.append(
            HistogramDataPoint(
                attributes=entry["labels"],
                start_time_unix_nano=start(entry["labels"]),
                time_unix_nano=now_ns,
                count=entry.get("count", int(previous)),
                sum=entry.get("sum", 0.0),
                bucket_counts=counts,
                explicit_bounds=bounds,
                min=None,  # type: ignore[arg-type]  # Prometheus keeps neither
                max=None,  # type: ignore[arg-type]
            )
        )
    return points


class OtlpMetricsPusher:
    """Pushes ``registry`` through ``exporter`` every ``interval`` seconds from a thread."""

    def __init__(
        self,
        service: str,
        exporter: MetricExporter | None = None,
        *,
        interval: float | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            exporter = OTLPMetricExporter()
        if interval is None:
            interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") or 60_000) / 1000
        self.exporter = exporter
        self.interval = interval
        self.registry = registry
        self.resource = Resource.create({SERVICE_NAME: f"agentmesh-{service}"})
        self.started_ns = time.time_ns()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-metrics", daemon=True)

    def collect(self) -> MetricsData:
        metrics = convert(self.registry, self.started_ns, time.time_ns())
        scope = ScopeMetrics(SCOPE, metrics, schema_url="")
        return MetricsData([ResourceMetrics(self.resource, [scope], schema_url="")])

    def push(self) -> None:
        try:
            self.exporter.export(self.collect())
        except Exception:
            logger.exception("OTLP metrics export failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Push once more, then stop."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        self.push()
        self.exporter.shutdown()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()


_pusher: OtlpMetricsPusher | None = None
_users = 0
_lock = threading.Lock()


def start(service: str) -> None:
    """Start the process's pusher when OTLP is configured (counted: ``stop`` once each)."""
    global _pusher, _users
    if not configured():
        return
    with _lock:
        _users += 1
        if _pusher is None:
            _pusher = OtlpMetricsPusher(service)
            _pusher.start()


def stop() -> None:
    global _pusher, _users
    with _lock:
        if _users == 0:
            return
        _users -= 1
        pusher = _pusher if _users == 0 else None
        if pusher is not None:
            _pusher = None
    if pusher is not None:
        pusher.stop()

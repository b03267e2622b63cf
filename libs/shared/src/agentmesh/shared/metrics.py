"""Prometheus metrics every service exports (``prometheus-client``).

- ``http_server_request_duration_seconds{service, http_route, http_request_method,
  status_class}``: a histogram per route template (OTel's ``http.server.request.duration``);
  its ``_count`` is the request count.
- ``agentmesh_db_pool_connections{service, state}`` (``in_use``, ``idle``, ``waiting``) and
  ``agentmesh_db_pool_checkout_wait_seconds{service}``.

Services add their own (chat's active streams, the gateway's breakers, ...) as module-level
metrics with a ``service`` label, so several apps in one process (the tests) share one
registry without clashing. ``GET /metrics`` serves them on the service's port; with
``AGENTMESH_METRICS_PORT`` set they move to a server of their own on that port.
The event backbone's metrics (outbox, consumers) are in ``events.metrics``; with an OTLP
endpoint ``otlp_metrics`` pushes this same registry over OTLP. Every metric with its
labels: docs/observability.md.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, cast

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest, start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets (seconds) for HTTP and pool waits: 1 ms to 60 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests, by route template, method and status class.",
    ["service", "http_route", "http_request_method", "status_class"],
    buckets=BUCKETS,
)
POOL_WAIT = Histogram(
    "agentmesh_db_pool_checkout_wait_seconds",
    "Time a request waited for a pooled database connection.",
    ["service"],
    buckets=BUCKETS,
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: At most this many bound series per app; beyond it (never, with route templates as
#: labels) ``.labels()`` is called per request as before.
_MAX_BOUND_SERIES = 1024


class HttpMetricsMiddleware:
    """Times every HTTP request by the route template that served it (never the raw path,
    which would carry ids and make one series per resource), and writes its access-log
    line. Pure ASGI: streaming responses are timed to their last byte, not buffered.

    The access log (logger ``agentmesh.access``, one JSON line per request): method, route
    template, status, duration, bytes sent, client IP and the principal (``user_id``,
    ``api_key_id``; never a token), with the request id and trace id every log line
    carries. Never the query string, never a header value. Health and metrics requests
    log at debug level.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        #: ``HTTP_DURATION``'s child per (route template, method, status class), bound once:
        #: ``.labels()`` on every request cost more than the observation itself.
        self._series: dict[tuple[str, str, int], Histogram] = {}

    def _histogram(self, template: str, method: str, status: int) -> Histogram:
        key = (template, method, status // 100)
        series = self._series.get(key)
        if series is None:
            series = HTTP_DURATION.labels(self.service, template, method, f"{key[2]}xx")
            if len(self._series) < _MAX_BOUND_SERIES:
                self._series[key] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0

        async def send_status(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = (
                (scope.get("state") or {}).get("route_template")
                or getattr(route, "path", None)
                or "unmatched"
            )
            method = scope.get("method", "GET")
            method_label = method if method in _METHODS else "_OTHER"
            self._histogram(template, method_label, status).observe(elapsed)
            _access_log(scope, method, template, status, elapsed, sent)


ACCESS_LOG = logging.getLogger("agentmesh.access")
_QUIET = ("/health/", "/metrics")


def _access_log(
    scope: Scope, method: str, template: str, status: int, elapsed: float, sent: int
) -> None:
    path = scope.get("path", "")
    level = logging.DEBUG if path.startswith(_QUIET) else logging.INFO
    if not ACCESS_LOG.isEnabledFor(level):
        return
    state = scope.get("state") or {}
    client = state.get("client_ip") or (scope.get("client") or ("", 0))[0]
    # What ``ACCESS_LOG.log(level, ..., extra=...)`` does, less the walk up the stack for
    # the caller's file and line (always this function; no formatter prints them).
    args = (method, template, status)
    record = ACCESS_LOG.makeRecord(
        ACCESS_LOG.name, level, __file__, 0, "%s %s %d", args, None, "_access_log"
    )
    fields = record.__dict__  # the ``extra`` fields, set as makeRecord would
    fields["http_method"] = method
    fields["http_route"] = template
    fields["http_status"] = status
    fields["duration_ms"] = round(elapsed * 1000, 3)
    fields["bytes_sent"] = sent
    fields["client_ip"] = client
    fields["user_id"] = state.get("principal_user_id")
    fields["api_key_id"] = state.get("principal_api_key_id")
    ACCESS_LOG.handle(record)


class MeasuredPool(AsyncAdaptedQueuePool):
    """The async engine's usual pool, counting waiters and timing each checkout."""

    _wait: Histogram | None  # ``POOL_WAIT``'s child for ``service``

    def __init__(self, *args: Any, service: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = service  # ``POOL_WAIT``'s child, bound once (not per checkout)
        self.waiting = 0
        self._lock = threading.Lock()
        _POOLS.add(self)

    def _do_get(self) -> ConnectionPoolEntry:
        with self._lock:
            self.waiting += 1
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            with self._lock:
                self.waiting -= 1
            wait = self._wait
            if wait is None:  # bound at the first checkout: no series before one
                wait = self._wait = POOL_WAIT.labels(self._service)
            wait.observe(time.perf_counter() - started)

    @property
    def service(self) -> str:
        return self._service

    @service.setter
    def service(self, service: str) -> None:
        self._service = service
        self._wait = None

    def recreate(self) -> MeasuredPool:
        pool = cast(MeasuredPool, super().recreate())  # built as self.__class__
        pool.service = self.service
        return pool


_POOLS: weakref.WeakSet[MeasuredPool] = weakref.WeakSet()


class PoolCollector(Collector):
    """Pool gauges, read at scrape time from every live pool of the process."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "agentmesh_db_pool_connections",
            "Database pool connections by state (in_use, idle, waiting for one).",
            labels=["service", "state"],
        )
        totals: dict[tuple[str, str], float] = {}
        for pool in list(_POOLS):
            for state, value in (
                ("in_use", pool.checkedout()),
                ("idle", pool.checkedin()),
                ("waiting", pool.waiting),
            ):
                key = (pool.service, state)
                totals[key] = totals.get(key, 0) + value
        for (service, state), total in sorted(totals.items()):
            family.add_metric([service, state], total)
        yield family


REGISTRY.register(PoolCollector())


def metrics_response() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


_servers: dict[int, object] = {}


def install(app: FastAPI, service: str, *, port: int | None, on_app: bool = True) -> None:
    """Time every request of ``app``; serve ``/metrics`` on the app (``on_app``), or on a
    server of its own when ``port`` is set."""
    app.add_middleware(HttpMetricsMiddleware, service=service)
    if port:
        if port not in _servers:  # one server per port per process
            _servers[port] = start_http_server(port, addr="0.0.0.0")
        return
    if on_app:
        app.add_api_route(
            "/metrics",
            metrics_response,
            methods=["GET"],
            include_in_schema=False,
            summary="Prometheus metrics",
        )

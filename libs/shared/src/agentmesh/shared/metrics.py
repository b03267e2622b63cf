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
            HTTP_DURATION.labels(
                self.service,
                template,
                method if method in _METHODS else "_OTHER",
                f"{status // 100}xx",
            ).observe(elapsed)
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
    ACCESS_LOG.log(
        level,
        "%s %s %d",
        method,
        template,
        status,
        extra={
            "http_method": method,
            "http_route": template,
            "http_status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "bytes_sent": sent,
            "client_ip": client,
            "user_id": state.get("principal_user_id"),
            "api_key_id": state.get("principal_api_key_id"),
        },
    )


class MeasuredPool(AsyncAdaptedQueuePool):
    """The async engine's usual pool, counting waiters and timing each checkout."""

    def __init__(self, *args: Any, service: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = service
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
            POOL_WAIT.labels(self.service).observe(time.perf_counter() - started)

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

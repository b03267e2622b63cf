"""Error tracking with Sentry (``sentry-sdk``), on only when ``SENTRY_DSN`` is set.

What goes to Sentry: unhandled exceptions of HTTP handlers (``SentryTagsMiddleware``, with
the route, request id, trace id and user id), events a durable consumer dead-letters,
failed ingest jobs, and every log record at ERROR or above (the SDK's logging integration:
the background loops log their failures with ``logger.exception``). Each event is tagged
with ``service``, ``request_id`` and ``trace_id`` from the context it was raised in.

Secrets are scrubbed before anything leaves the process: the SDK's ``EventScrubber`` with
its denylist (plus ours) blanks Authorization, cookies, API keys, tokens and passwords
wherever they appear as keys (headers, cookies, extras, breadcrumbs, recursively); query
strings are dropped; bearer tokens, JWTs, AgentMesh API keys and URL passwords are masked
inside messages and exception values; local variables are never sent; no default PII
(``send_default_pii`` left unset: the SDK collects no user identity, IP or cookies).
``SENTRY_ENVIRONMENT`` and ``SENTRY_RELEASE`` are read by the SDK itself.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import sentry_sdk
from opentelemetry import trace
from sentry_sdk.integrations.argv import ArgvIntegration
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from starlette.types import ASGIApp, Receive, Scope, Send

from agentmesh.shared.context import current_request_id

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

#: Keys blanked wherever they appear, beside the SDK's own list.
DENYLIST = [
    *DEFAULT_DENYLIST,
    "x-api-key",
    "proxy-authorization",
    "set-cookie",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "internal_token",
    "api_key_secret",
    "dsn",
    "database_url",
]
SCRUBBED = "[Filtered]"
_SECRET_VALUES = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + SCRUBBED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), SCRUBBED),
    (re.compile(r"\bam_[A-Za-z0-9]+_[A-Za-z0-9_-]{16,}"), SCRUBBED),
    (re.compile(r"(://[^/\s:@]*):[^@\s/]+@"), r"\1:" + SCRUBBED + "@"),
]

_service: str | None = None


def enabled() -> bool:
    return _service is not None


def init(service: str, dsn: str | None = None) -> bool:
    """Start the SDK for ``service`` when a DSN is given or ``SENTRY_DSN`` is set; once
    per process (the first service's name is the default ``service`` tag)."""
    global _service
    dsn = dsn or os.environ.get("SENTRY_DSN")
    if not dsn:
        return False
    if _service is not None:
        return True
    sentry_sdk.init(
        dsn=dsn,
        include_local_variables=False,
        event_scrubber=EventScrubber(denylist=DENYLIST, recursive=True),
        before_send=before_send,
        # OpenTelemetry traces requests; Sentry only receives errors, and adds no
        # sentry-trace or baggage header to any outbound call (a provider would see them).
        traces_sample_rate=None,
        trace_propagation_targets=[],
        # Only the request context of FastAPI/Starlette beside the SDK's defaults (logging,
        # dedupe, ...): no automatic LangChain, database or HTTP-client instrumentation,
        # which could put prompts or queries into breadcrumbs.
        auto_enabling_integrations=False,
        integrations=[StarletteIntegration(), FastApiIntegration()],
        # The command line may carry a secret.
        disabled_integrations=[ArgvIntegration()],
    )
    sentry_sdk.get_global_scope().set_tag("service", service)
    _service = service
    return True


def close(timeout: float = 2.0) -> None:
    """Flush and stop the SDK (tests; processes just exit)."""
    global _service
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout)
    sentry_sdk.get_global_scope().set_client(None)
    _service = None


def capture(exc: BaseException, *, user_id: str | None = None, **tags: Any) -> None:
    """Send ``exc`` with ``tags`` (None values left out); nothing when Sentry is off."""
    if _service is None:
        return
    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            if value is not None:
                scope.set_tag(key, str(value))
        if user_id:
            scope.set_tag("user_id", user_id)
            scope.set_user({"id": user_id})
        scope.capture_exception(exc)


def _mask(text: str) -> str:
    for pattern, replacement in _SECRET_VALUES:
        text = pattern.sub(replacement, text)
    return text


def before_send(event: Event, hint: Hint) -> Event:
    """Tag with the request and trace of the current context; scrub what the key-based
    scrubber cannot see (query strings, secrets inside messages)."""
    tags = event.setdefault("tags", {})
    request_id = current_request_id()
    if request_id and "request_id" not in tags:
        tags["request_id"] = request_id
    span = trace.get_current_span().get_span_context()
    if span.is_valid and "trace_id" not in tags:
        tags["trace_id"] = format(span.trace_id, "032x")
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("query_string", None)
        request.pop("cookies", None)
        url = request.get("url")
        if isinstance(url, str):
            request["url"] = url.split("?", 1)[0]
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        for key in ("message", "formatted"):
            if isinstance(logentry.get(key), str):
                logentry[key] = _mask(logentry[key])
        logentry.pop("params", None)
    if isinstance(event.get("message"), str):
        event["message"] = _mask(event["message"])
    for value in (event.get("exception") or {}).get("values") or []:
        if isinstance(value.get("value"), str):
            value["value"] = _mask(value["value"])
    # A dict here; Sentry's type also allows the AnnotatedValue its serializer trims into.
    breadcrumbs = event.get("breadcrumbs") or {}
    crumbs = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else None
    for crumb in crumbs or []:
        if isinstance(crumb.get("message"), str):
            crumb["message"] = _mask(crumb["message"])
    return event


class SentryTagsMiddleware:
    """Sends an HTTP handler's unhandled exception with the service, route, request id,
    trace id and user id, then lets it go on to the problem+json error handler. Inside
    the request-id and tracing middleware, so both are still current here."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            state = scope.get("state") or {}
            route = getattr(scope.get("route"), "path", None)
            capture(
                exc,
                service=self.service,
                http_route=state.get("route_template") or route,
                http_method=scope.get("method"),
                request_id=current_request_id() or state.get("request_id"),
                user_id=state.get("principal_user_id"),
                api_key_id=state.get("principal_api_key_id"),
            )
            raise

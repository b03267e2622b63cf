"""The proxied routes as raw ASGI: authenticate, rate-limit, forward.

``ProxyRoute`` takes the place of the catch-all FastAPI route the gateway had: every path
no other route serves. A proxied request no longer builds FastAPI's request, solves
dependencies or wraps its answer in Starlette response objects (a fifth of the gateway's
CPU per request, ``bench.read_path --profile gateway``). It runs inside the app's
middleware all the same: request id, tracing, metrics and the access log, security
headers, CORS, and the error handlers, which render an ``AppError`` raised here as
problem+json (on ``/v1``, OpenAI's error shape instead).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from agentmesh.gateway.addresses import TrustedProxies, ip_bucket
from agentmesh.gateway.metrics import RATE_LIMITED
from agentmesh.gateway.principals import Authenticator
from agentmesh.gateway.proxy import Proxy, header, upstream_headers
from agentmesh.gateway.routing import resolve
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.gateway.shared_limits import SharedLimits
from agentmesh.shared.auth import note_principal
from agentmesh.shared.context import REQUEST_ID_HEADER
from agentmesh.shared.errors import AppError, NotFound, Unauthorized
from agentmesh.shared.openai_errors import openai_error

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")


class RateLimited(AppError):
    status, type, title = 429, "rate-limited", "Too Many Requests"


def client_ip(scope: Scope, trusted: TrustedProxies) -> str:
    """The caller's address: the peer, or behind trusted proxies the right-most
    ``X-Forwarded-For`` entry that is not one of them (the left ones are client-made)."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if peer not in trusted:
        return peer
    forwarded = (header(scope, b"x-forwarded-for") or b"").decode("latin-1")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return peer


def request_scheme(scope: Scope, trusted: TrustedProxies) -> str:
    scheme: str = scope.get("scheme", "http")
    client = scope.get("client")
    if client and client[0] in trusted:
        proto = header(scope, b"x-forwarded-proto")
        return proto.decode("latin-1").split(",")[0] if proto is not None else scheme
    return scheme


class Forwarder:
    """One proxied request: its route, caller and rate limit, then the upstream call."""

    def __init__(
        self,
        settings: GatewaySettings,
        authenticator: Authenticator,
        limits: SharedLimits,
        trusted: TrustedProxies,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.limits = limits
        self.trusted = trusted
        #: Opened at start-up, with the HTTP client.
        self.proxy: Proxy | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not scope["path"].startswith("/v1/"):
            await self.forward(scope, receive, send)
            return
        try:
            await self.forward(scope, receive, send)
        except AppError as error:  # OpenAI clients parse OpenAI's error shape on /v1
            body = openai_error(error.status, error.detail or error.title, slug=error.type)
            headers = dict(error.headers or {})
            rid = (scope.get("state") or {}).get("request_id")
            if rid:
                headers[REQUEST_ID_HEADER] = rid
            await JSONResponse(body, status_code=error.status, headers=headers)(
                scope, receive, send
            )

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        route = resolve(method, path)
        if route is None:
            raise NotFound(f"No resource at {method} {path}")
        ip = client_ip(scope, self.trusted)
        # Metrics and the access log name the route group, not the catch-all template.
        state = scope.setdefault("state", {})
        state["route_template"] = f"{route.upstream}:{route.group}"
        state["client_ip"] = ip
        caller = None
        if not route.public and method != "OPTIONS":
            try:
                caller = await self.authenticator.authenticate(Request(scope).headers)
            except Unauthorized:
                # Bad credentials cost the caller's IP, so guessing keys or flooding
                # random tokens is limited too (each may cost identity a lookup).
                failed = await self.limits.take(
                    "auth_failures", f"ip:{ip_bucket(ip)}", self.settings.auth_failure_limit
                )
                if not failed.allowed:
                    RATE_LIMITED.labels("auth_failures").inc()
                    raise RateLimited(
                        "Too many failed authentications from this address.",
                        headers=failed.headers(),
                    ) from None
                raise
            note_principal(Request(scope), caller.user_id, caller.api_key_id)
        keys = caller.limit_keys if caller else (f"ip:{ip_bucket(ip)}",)
        limit = self.settings.policy(route.group).rate_limit
        decision = await self.limits.take(route.group, keys, limit)
        if not decision.allowed:
            RATE_LIMITED.labels(route.group).inc()
            raise RateLimited(
                "Slow down: the rate limit of this route is exceeded.", headers=decision.headers()
            )
        assert self.proxy is not None, "the gateway is not started"
        headers = upstream_headers(scope, caller, ip, request_scheme(scope, self.trusted))
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]
        await self.proxy.forward(scope, receive, send, route, headers, extra)


class ProxyRoute(BaseRoute):
    """The forwarder as a route. With ``prefixes``, first in the app: the proxied paths
    (in ``METHODS``) without trying every route of the gateway's own before. Without,
    last: every path no other route serves, as the catch-all route it replaces (405 for
    a method not in ``METHODS``)."""

    #: What metrics and the access log name a path of no route group (the catch-all's).
    path = "/{path:path}"

    def __init__(self, forwarder: Forwarder, prefixes: tuple[str, ...] | None = None) -> None:
        self.forwarder = forwarder
        self.prefixes = prefixes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        if scope["method"] in METHODS:
            if self.prefixes is None or scope["path"].startswith(self.prefixes):
                return Match.FULL, {}
            return Match.NONE, {}
        return (Match.NONE if self.prefixes is not None else Match.PARTIAL), {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in METHODS:
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(METHODS)})
        await self.forwarder(scope, receive, send)

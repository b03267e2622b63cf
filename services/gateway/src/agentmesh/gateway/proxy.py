"""Forwarding a request to its upstream and the answer back, streams unbuffered."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import yarl
from opentelemetry import propagate
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from agentmesh.gateway.breaker import CircuitBreaker
from agentmesh.gateway.principals import Caller
from agentmesh.gateway.routing import Route
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.shared.context import REQUEST_ID_HEADER, current_request_id
from agentmesh.shared.errors import UPSTREAM_HEALTH_HEADER, UPSTREAM_UNAVAILABLE, AppError

logger = logging.getLogger("agentmesh.gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: Not passed on to clients: between the services and the gateway only.
INTERNAL_RESPONSE_HEADERS = frozenset({UPSTREAM_HEALTH_HEADER.lower()})
#: Never accepted from clients: identity and routing facts only the gateway may assert.
INTERNAL_PREFIXES = (
    "x-agentmesh-",
    "x-internal-",
    "x-forwarded-",
    "x-real-ip",
    "forwarded",
    "x-user-",
    "x-api-key",
    "authorization",
)
NO_STORE_GROUPS = frozenset({"auth"})


class PayloadTooLarge(AppError):
    status, type, title = 413, "payload-too-large", "Payload Too Large"


class UpstreamUnavailable(AppError):
    status, type, title = 503, "upstream-unavailable", "Upstream unavailable"


class BadGateway(AppError):
    status, type, title = 502, "bad-gateway", "Bad Gateway"


class UpstreamTimeout(AppError):
    status, type, title = 504, "upstream-timeout", "Upstream timed out"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes, declared or not."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise AppError("The client went away.", status=400, type="client-disconnected") from None
    return b"".join(chunks)


def upstream_headers(request: Request, caller: Caller | None, client_ip: str, scheme: str):
    headers = {
        k: v
        for k, v in request.headers.items()
        if k not in HOP_BY_HOP and not k.startswith(INTERNAL_PREFIXES)
    }
    if caller is not None:
        headers["authorization"] = f"Bearer {caller.token}"
    headers["x-forwarded-for"] = client_ip
    headers["x-forwarded-proto"] = scheme
    headers["x-forwarded-host"] = request.headers.get("host", "")
    request_id = current_request_id()
    if request_id:
        headers[REQUEST_ID_HEADER.lower()] = request_id
    propagate.inject(headers)  # the upstream's spans join this request's trace
    return headers


def own_outage(upstream: aiohttp.ClientResponse) -> bool:
    """Did the upstream say that it cannot serve (not that a user's dependency failed)?"""
    marked = upstream.headers.get(UPSTREAM_HEALTH_HEADER, "").strip().lower()
    return upstream.status == 503 and marked == UPSTREAM_UNAVAILABLE


def response_headers(upstream: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    """The upstream's headers to pass on, repeated ones (``Set-Cookie``, ``Link``) kept
    as separate lines: joining them would corrupt cookies."""
    return [
        (k, v)
        for k, v in upstream.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() not in INTERNAL_RESPONSE_HEADERS
    ]


class Proxy:
    def __init__(self, settings: GatewaySettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.upstreams = settings.upstreams()
        #: One breaker per (upstream, route group): a stuck run path of chat does not
        #: close chat's other routes, nor knowledge the agents CRUD routes.
        self.breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def breaker(self, upstream: str, group: str) -> CircuitBreaker:
        key = (upstream, group)
        if key not in self.breakers:
            self.breakers[key] = CircuitBreaker(
                self.settings.breaker_failures, self.settings.breaker_open_seconds
            )
        return self.breakers[key]

    async def forward(
        self, request: Request, route: Route, caller: Caller | None, client_ip: str, scheme: str
    ) -> Response:
        policy = self.settings.policy(route.group)
        body = await read_body(request, policy.max_body_bytes)
        breaker = self.breaker(route.upstream, route.group)
        if not breaker.allow():
            raise UpstreamUnavailable(
                f"The {route.upstream} service ({route.group} routes) is failing; "
                "try again shortly.",
                headers={"Retry-After": str(breaker.retry_after())},
            )
        # Forward the path exactly as received (still percent-encoded), so the upstream
        # client never decodes it a second time.
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = self.upstreams[route.upstream] + raw_path.decode("latin-1")
        query = request.scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=policy.connect_timeout, sock_read=policy.read_timeout
        )
        try:
            upstream = await self.session.request(
                request.method,
                yarl.URL(url, encoded=True),
                data=body or None,
                headers=upstream_headers(request, caller, client_ip, scheme),
                timeout=timeout,
                allow_redirects=False,
                auto_decompress=False,
            )
        except (
            aiohttp.ClientConnectorError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
        ) as exc:
            breaker.failure()
            logger.warning("upstream %s unreachable: %s", route.upstream, exc)
            raise UpstreamUnavailable(f"The {route.upstream} service is unavailable.") from exc
        except TimeoutError as exc:
            breaker.failure()
            raise UpstreamTimeout(f"The {route.upstream} service did not answer in time.") from exc
        except aiohttp.ClientError as exc:  # a malformed answer, a broken connection
            breaker.failure()
            raise BadGateway(f"The {route.upstream} service answered badly.") from exc
        except BaseException:  # cancelled (the client left): not the upstream's fault
            breaker.release()
            raise
        # Only the upstream's own outage counts. Any other answer (a 502 because a user's
        # model provider or MCP server is down, a 500 of one request) shows that the
        # service is up, and must not open the circuit for every other user.
        if own_outage(upstream):
            breaker.failure()
        else:
            breaker.success()
        headers = response_headers(upstream)
        streaming = (
            upstream.headers.get("content-type", "").startswith("text/event-stream")
            or "content-length" not in upstream.headers
        )
        if not streaming:
            try:
                content = await upstream.read()
            except TimeoutError as exc:
                raise UpstreamTimeout(f"The {route.upstream} service stalled.") from exc
            except aiohttp.ClientError as exc:
                raise BadGateway(f"The {route.upstream} service answered badly.") from exc
            finally:
                upstream.release()
            response: Response = Response(content, status_code=upstream.status)
        else:
            response = StreamingResponse(
                relay(upstream, route.upstream), status_code=upstream.status
            )
        for name, value in headers:
            response.headers.append(name, value)
        if route.group in NO_STORE_GROUPS or route.upstream == "identity":
            response.headers["Cache-Control"] = "no-store"
        return response


async def relay(upstream: aiohttp.ClientResponse, name: str) -> AsyncIterator[bytes]:
    """Pass chunks on as they arrive. When the client goes away Starlette cancels this
    generator, and closing the upstream response tells the service the client left."""
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("stream from %s broke off: %s", name, exc)
    finally:
        upstream.close()

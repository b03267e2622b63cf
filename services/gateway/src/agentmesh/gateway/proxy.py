"""Forwarding a request to its upstream and the answer back, streams unbuffered.

Raw ASGI (``fastpath`` calls it): the request's headers are read from the scope as bytes
and the answer is written with ``send``, without Starlette's request and response objects
(``StreamingResponse`` alone started an anyio task group per stream).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import yarl
from opentelemetry import propagate
from starlette.types import Receive, Scope, Send

from agentmesh.gateway.breaker import CircuitBreaker
from agentmesh.gateway.principals import Caller
from agentmesh.gateway.routing import Route
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.shared.context import REQUEST_ID_HEADER, current_request_id
from agentmesh.shared.errors import UPSTREAM_HEALTH_HEADER, UPSTREAM_UNAVAILABLE, AppError

logger = logging.getLogger("agentmesh.gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
#: Not passed on to clients: between the services and the gateway only.
INTERNAL_RESPONSE_HEADERS = frozenset({UPSTREAM_HEALTH_HEADER.lower().encode()})
#: Never accepted from clients: identity and routing facts only the gateway may assert.
INTERNAL_PREFIXES = (
    b"x-agentmesh-",
    b"x-internal-",
    b"x-forwarded-",
    b"x-real-ip",
    b"forwarded",
    b"x-user-",
    b"x-api-key",
    b"authorization",
)
NO_STORE_GROUPS = frozenset({"auth"})
_CACHE_CONTROL = b"cache-control"
_NO_STORE = (_CACHE_CONTROL, b"no-store")


class PayloadTooLarge(AppError):
    status, type, title = 413, "payload-too-large", "Payload Too Large"


class UpstreamUnavailable(AppError):
    status, type, title = 503, "upstream-unavailable", "Upstream unavailable"


class BadGateway(AppError):
    status, type, title = 502, "bad-gateway", "Bad Gateway"


class UpstreamTimeout(AppError):
    status, type, title = 504, "upstream-timeout", "Upstream timed out"


class ClientLeft(Exception):
    """The client disconnected while its stream was being relayed."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the request header ``name`` (lower case), as sent."""
    return next((value for key, value in scope["headers"] if key == name), None)


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes, declared or not."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise AppError("The client went away.", status=400, type="client-disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def upstream_headers(
    scope: Scope, caller: Caller | None, client_ip: str, scheme: str
) -> dict[str, str]:
    """The client's headers minus hop-by-hop and internal ones, plus what the gateway
    asserts: the verified token, the client's address and scheme, request id, trace."""
    headers = {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in scope["headers"]
        if k not in HOP_BY_HOP and not k.startswith(INTERNAL_PREFIXES)
    }
    if caller is not None:
        headers["authorization"] = f"Bearer {caller.token}"
    headers["x-forwarded-for"] = client_ip
    headers["x-forwarded-proto"] = scheme
    headers["x-forwarded-host"] = (header(scope, b"host") or b"").decode("latin-1")
    request_id = current_request_id()
    if request_id:
        headers[REQUEST_ID_HEADER.lower()] = request_id
    propagate.inject(headers)  # the upstream's spans join this request's trace
    return headers


def own_outage(upstream: aiohttp.ClientResponse) -> bool:
    """Did the upstream say that it cannot serve (not that a user's dependency failed)?"""
    marked = upstream.headers.get(UPSTREAM_HEALTH_HEADER, "").strip().lower()
    return upstream.status == 503 and marked == UPSTREAM_UNAVAILABLE


def response_headers(upstream: aiohttp.ClientResponse, no_store: bool) -> list[tuple[bytes, bytes]]:
    """The upstream's headers to pass on (names lower-cased), repeated ones
    (``Set-Cookie``, ``Link``) kept as separate lines: joining them would corrupt
    cookies. ``no_store``: ``Cache-Control: no-store`` instead of the upstream's."""
    headers = []
    for name, value in upstream.raw_headers:
        name = name.lower()
        if name in HOP_BY_HOP or name in INTERNAL_RESPONSE_HEADERS:
            continue
        if no_store and name == _CACHE_CONTROL:
            continue
        headers.append((name, value))
    if no_store:
        headers.append(_NO_STORE)
    return headers


class Proxy:
    def __init__(self, settings: GatewaySettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.upstreams = settings.upstreams()
        #: One breaker per (upstream, route group): a stuck run path of chat does not
        #: close chat's other routes, nor knowledge the agents CRUD routes.
        self.breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}

    def breaker(self, upstream: str, group: str) -> CircuitBreaker:
        key = (upstream, group)
        if key not in self.breakers:
            self.breakers[key] = CircuitBreaker(
                self.settings.breaker_failures, self.settings.breaker_open_seconds
            )
        return self.breakers[key]

    def timeout(self, group: str) -> aiohttp.ClientTimeout:
        """The group's connect and read timeouts (made once per group)."""
        timeout = self._timeouts.get(group)
        if timeout is None:
            policy = self.settings.policy(group)
            timeout = self._timeouts[group] = aiohttp.ClientTimeout(
                total=None, sock_connect=policy.connect_timeout, sock_read=policy.read_timeout
            )
        return timeout

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route,
        headers: dict[str, str],
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        """Send the request upstream with ``headers`` and write its answer, plus the
        ``extra`` response headers (the rate limit's)."""
        limit = self.settings.policy(route.group).max_body_bytes
        body = await read_body(receive, header(scope, b"content-length"), limit)
        breaker = self.breaker(route.upstream, route.group)
        if not breaker.allow():
            raise UpstreamUnavailable(
                f"The {route.upstream} service ({route.group} routes) is failing; "
                "try again shortly.",
                headers={"Retry-After": str(breaker.retry_after())},
            )
        # Forward the path exactly as received (still percent-encoded), so the upstream
        # client never decodes it a second time.
        raw_path = scope.get("raw_path") or scope["path"].encode()
        url = self.upstreams[route.upstream] + raw_path.decode("latin-1")
        query = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        try:
            upstream = await self.session.request(
                scope["method"],
                yarl.URL(url, encoded=True),
                data=body or None,
                headers=headers,
                timeout=self.timeout(route.group),
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
        no_store = route.group in NO_STORE_GROUPS or route.upstream == "identity"
        passed = response_headers(upstream, no_store) + extra
        streaming = (
            upstream.headers.get("content-type", "").startswith("text/event-stream")
            or "content-length" not in upstream.headers
        )
        start = {"type": "http.response.start", "status": upstream.status, "headers": passed}
        if streaming:
            try:
                await send(start)
            except BaseException:  # the client is gone before the first byte
                upstream.close()
                raise
            await relay(upstream, route.upstream, receive, send)
            return
        try:
            content = await upstream.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {route.upstream} service stalled.") from exc
        except aiohttp.ClientError as exc:
            raise BadGateway(f"The {route.upstream} service answered badly.") from exc
        finally:
            upstream.release()
        if upstream.status >= 200 and upstream.status not in (204, 304):
            passed.insert(0, (b"content-length", str(len(content)).encode()))
        await send(start)
        await send({"type": "http.response.body", "body": content})


async def relay(upstream: aiohttp.ClientResponse, name: str, receive: Receive, send: Send) -> None:
    """Pass chunks on as they arrive (what has arrived goes out in one write). When the
    client goes away, closing the upstream response tells the service the client left."""
    left = asyncio.ensure_future(_client_left(receive, upstream.content))
    try:
        async for chunk in upstream.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except ClientLeft:
        return
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("stream from %s broke off: %s", name, exc)
    finally:
        left.cancel()
        upstream.close()  # read to its end, the connection is back in the pool already
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _client_left(receive: Receive, content: aiohttp.StreamReader) -> None:
    """Wait for the client's disconnect, then end the relay's read with ``ClientLeft``."""
    while (await receive())["type"] != "http.disconnect":
        pass
    content.set_exception(ClientLeft())

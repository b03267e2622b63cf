"""The one factory of outbound HTTP clients: every call to a user-chosen address uses it.

The ``http_request`` tool, MCP connections, model providers (the OpenAI, Anthropic and
Ollama SDKs get their ``httpx``/``httpx2`` client from here), remote embeddings and the
provider test all send through a guarded transport. Before each request, and so before
every redirect hop (a hop is a new request), it resolves the host, refuses any address the
``OutboundPolicy`` does not allow (``netguard.blocked_reason``: private, loopback,
link-local, CGNAT, multicast, metadata, and their IPv4-mapped, 6to4 and NAT64 forms), and
then connects to the address it checked, with the original ``Host`` header and TLS server
name: a DNS answer that changes after the check (rebinding) cannot move the connection.

``httpx2`` is the fork of httpx that the mcp SDK 2.x and the openai/anthropic SDKs use;
both libraries have the same transport API, so one implementation serves both.

``ClientCache`` holds objects that own such clients (SDK models, embedders): bounded,
expiring, and it closes what it drops once no task still uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Collection, Coroutine, Hashable
from types import ModuleType
from typing import Annotated, Any, Generic, TypeVar

import httpx
import httpx2
from cachetools import TTLCache
from pydantic import BeforeValidator
from pydantic_settings import NoDecode

from agentmesh.shared.errors import AppError
from agentmesh.shared.tools.netguard import (
    BlockedAddress,
    OutboundPolicy,
    UnresolvableHost,
    check_url,
    resolve_checked,
    split_entries,
)

__all__ = [
    "AddressNotAllowed",
    "AllowedPrivateHosts",
    "BlockedAddress",
    "ClientCache",
    "GuardedTransport",
    "GuardedTransport2",
    "OutboundPolicy",
    "RefusingTransport",
    "async_client",
    "async_client2",
    "check_field",
    "refusing_sync_client",
    "refusing_sync_client2",
]

#: Distinct host names a keep-alive transport pools connections for; further hosts are
#: served without keep-alive (a pool is per host name, so no connection opened for one
#: name and its certificate ever serves another name on the same IP).
MAX_POOLED_HOSTS = 16


#: ``AGENTMESH_ALLOWED_PRIVATE_HOSTS`` in a settings class: comma- or space-separated
#: ``host:port`` and CIDR entries (a JSON list works too); a bad entry fails start-up.
AllowedPrivateHosts = Annotated[
    tuple[str, ...], NoDecode, BeforeValidator(lambda value: split_entries(_json_list(value)))
]


def _json_list(value: Any) -> Any:
    """A JSON list as a list; anything else (``[::1]:8000, ...`` too) as it is."""
    if isinstance(value, str) and value.strip().startswith("["):
        import json

        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


class AddressNotAllowed(AppError):
    """422: a URL a user gave reaches an address the platform refuses."""

    status, type, title = 422, "address-not-allowed", "Address not allowed"


async def check_field(
    url: str, policy: OutboundPolicy | bool | None, field: str, *, unresolvable_ok: bool = False
) -> None:
    """``AddressNotAllowed`` naming ``field`` unless ``url`` may be reached under ``policy``.

    ``unresolvable_ok`` accepts a host that does not resolve now (a stored URL that is
    checked again on every use, when it must resolve)."""
    try:
        await check_url(url, allow_private=OutboundPolicy.of(policy))
    except UnresolvableHost:
        if not unresolvable_ok:
            raise AddressNotAllowed(
                f"{field}: cannot resolve the host", extra={"field": field}
            ) from None
    except BlockedAddress as exc:
        raise AddressNotAllowed(
            f"{field}: {exc}",
            extra={
                "field": field,
                "errors": [
                    {"loc": ["body", field], "msg": str(exc), "type": "address-not-allowed"}
                ],
            },
        ) from None


class _Pinned:
    """The guard, for either HTTP library (``_lib`` is ``httpx`` or ``httpx2``)."""

    _lib: ModuleType

    def __init__(
        self,
        policy: OutboundPolicy | bool | None = None,
        *,
        allowed_hosts: Collection[str] | None = None,
        inner: Any = None,
        keepalive: bool = False,
    ) -> None:
        self.policy = OutboundPolicy.of(policy)
        self.allowed_hosts = allowed_hosts
        self._inner = inner
        self._keepalive = keepalive and inner is None
        self._pools: dict[tuple[str, str, int | None], Any] = {}
        self._unpooled: Any = None

    def _transport(self, url: Any) -> Any:
        if self._inner is not None:
            return self._inner
        lib = self._lib
        key = (url.scheme, url.raw_host.decode("ascii").lower(), url.port)
        if self._keepalive and (key in self._pools or len(self._pools) < MAX_POOLED_HOSTS):
            if key not in self._pools:
                self._pools[key] = lib.AsyncHTTPTransport(trust_env=False)
            return self._pools[key]
        if self._unpooled is None:
            # No keep-alive: a connection pooled by IP must not serve another host name.
            self._unpooled = lib.AsyncHTTPTransport(
                limits=lib.Limits(max_keepalive_connections=0), trust_env=False
            )
        return self._unpooled

    async def handle_async_request(self, request: Any) -> Any:
        """Check ``request.url`` and send it to the first reachable checked address."""
        lib = self._lib
        addresses = await resolve_checked(
            str(request.url), allow_private=self.policy, allowed_hosts=self.allowed_hosts
        )
        host = request.url.raw_host.decode("ascii").lower().rstrip(".")
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions.setdefault("sni_hostname", host)
        transport = self._transport(request.url)
        last_error: Exception | None = None
        for address in addresses:
            pinned = lib.Request(
                request.method,
                request.url.copy_with(host=str(address)),
                headers=request.headers,
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await transport.handle_async_request(pinned)
            except lib.ConnectError as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def aclose(self) -> None:
        """Close every wrapped transport."""
        transports = [*self._pools.values(), self._unpooled, self._inner]
        self._pools.clear()
        for transport in transports:
            if transport is not None:
                await transport.aclose()


class GuardedTransport(_Pinned, httpx.AsyncBaseTransport):
    """The guarded transport for ``httpx`` (``http_request``, provider test, Ollama)."""

    _lib = httpx


class GuardedTransport2(_Pinned, httpx2.AsyncBaseTransport):
    """The guarded transport for ``httpx2`` (MCP, the OpenAI and Anthropic SDKs)."""

    _lib = httpx2


def async_client(
    policy: OutboundPolicy | bool | None,
    *,
    allowed_hosts: Collection[str] | None = None,
    keepalive: bool = False,
    inner: httpx.AsyncBaseTransport | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every request (and redirect) is guarded.

    ``trust_env`` is off: an environment proxy would connect on the guard's behalf to
    whatever the URL names. ``keepalive`` pools connections per host name (SDK clients
    that talk to one base URL); leave it off for user-driven fetches."""
    transport = GuardedTransport(
        policy, allowed_hosts=allowed_hosts, inner=inner, keepalive=keepalive
    )
    return httpx.AsyncClient(transport=transport, trust_env=False, **kwargs)


def async_client2(
    policy: OutboundPolicy | bool | None, *, keepalive: bool = False, **kwargs: Any
) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` whose every request (and redirect) is guarded."""
    transport = GuardedTransport2(policy, keepalive=keepalive)
    return httpx2.AsyncClient(transport=transport, trust_env=False, **kwargs)


class RefusingTransport(httpx.BaseTransport):
    """A sync transport that refuses every request (see ``refusing_sync_client``)."""

    def handle_request(self, request: Any) -> Any:
        raise BlockedAddress("synchronous outbound calls are not allowed; use the async API")


class _Refusing2(httpx2.BaseTransport):
    def handle_request(self, request: Any) -> Any:
        raise BlockedAddress("synchronous outbound calls are not allowed; use the async API")


def refusing_sync_client() -> httpx.Client:
    """For an SDK's synchronous slot: the services only call asynchronously, and the guard
    resolves names on the event loop, so a sync call is refused rather than unguarded."""
    return httpx.Client(transport=RefusingTransport(), trust_env=False)


def refusing_sync_client2() -> httpx2.Client:
    """``refusing_sync_client`` for httpx2 SDKs."""
    return httpx2.Client(transport=_Refusing2(), trust_env=False)


V = TypeVar("V")


class _EvictingTTLCache(TTLCache):  # type: ignore[type-arg]
    """A ``TTLCache`` that reports each value it drops (expired or over ``maxsize``)."""

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        on_evict: Callable[[Any], None],
        timer: Callable[[], float] | None = None,
    ) -> None:
        if timer is None:
            super().__init__(maxsize, ttl)
        else:
            super().__init__(maxsize, ttl, timer=timer)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self._on_evict(value)
        return key, value

    def expire(self, time: Any = None) -> Any:
        expired = super().expire(time)
        for _key, value in expired:
            self._on_evict(value)
        return expired


class ClientCache(Generic[V]):
    """A bounded, expiring cache of values that own HTTP clients.

    ``get`` builds a value on a miss. A value dropped (expired, over ``maxsize`` or
    ``discard``-ed) is closed with ``close``: at once if no task still uses it, else
    when the last task that took it from the cache ends, so a stream in flight is never
    cut; with ``max_hold``, at the latest that many seconds after it was dropped (for
    values taken by long-lived worker tasks). Values can hold secrets (a decrypted key):
    the TTL bounds how long they live.
    """

    def __init__(
        self,
        *,
        maxsize: int,
        ttl: float,
        close: Callable[[V], Coroutine[Any, Any, None]],
        timer: Callable[[], float] | None = None,
        max_hold: float | None = None,
    ) -> None:
        self._cache = _EvictingTTLCache(maxsize, ttl, self._retire, timer)
        self._close = close
        self._max_hold = max_hold
        self._users: dict[int, int] = {}
        self._retired: dict[int, V] = {}
        self._held: weakref.WeakKeyDictionary[asyncio.Task[Any], set[int]] = (
            weakref.WeakKeyDictionary()
        )
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The cached value for ``key`` (built on a miss), held until the task ends."""
        self._cache.expire()
        value: V | None = self._cache.get(key)
        if value is None:
            value = build()
            self._cache[key] = value
        self._hold(value)
        return value

    def discard(self, key: Hashable) -> None:
        """Drop ``key``'s value (closed once unused)."""
        value = self._cache.pop(key, None)
        if value is not None:
            self._retire(value)

    async def aclose(self) -> None:
        """Close every value (at shutdown)."""
        values = list(self._cache.values()) + list(self._retired.values())
        self._cache.clear()
        self._retired.clear()
        for value in values:
            await self._close(value)

    def _hold(self, value: V) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop (a thread): nothing to hold it for
            return
        if task is None:
            return
        held = self._held.setdefault(task, set())
        if id(value) in held:
            return
        held.add(id(value))
        self._users[id(value)] = self._users.get(id(value), 0) + 1
        task.add_done_callback(lambda _task: self._release(value))

    def _release(self, value: V) -> None:
        left = self._users.get(id(value), 1) - 1
        if left > 0:
            self._users[id(value)] = left
            return
        self._users.pop(id(value), None)
        retired = self._retired.pop(id(value), None)
        if retired is not None:
            self._schedule_close(retired)

    def _retire(self, value: V) -> None:
        if not self._users.get(id(value)):
            self._schedule_close(value)
            return
        self._retired[id(value)] = value
        if self._max_hold is not None:
            with contextlib.suppress(RuntimeError):  # no loop: nothing to schedule on
                asyncio.get_running_loop().call_later(self._max_hold, self._expire_hold, value)

    def _expire_hold(self, value: V) -> None:
        if self._retired.pop(id(value), None) is not None:
            self._users.pop(id(value), None)
            self._schedule_close(value)

    def _schedule_close(self, value: V) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # dropped outside the loop: nothing is connected there
            return
        task = loop.create_task(self._close(value))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

"""``netguard.GuardedTransport`` for httpx2, the HTTP client of the mcp SDK 2.x.

The check itself is netguard's (``resolve_checked``); this only pins each request to the
address that was checked, so DNS that changes after the check (rebinding) cannot send the
connection to a private address.
"""

from __future__ import annotations

import httpx2

from agentmesh.shared.tools.netguard import resolve_checked


class PinnedTransport(httpx2.AsyncBaseTransport):
    """Check every request (each redirect hop too) and connect to the checked address."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        # No keep-alive: a connection pooled by IP must not serve another host name.
        self._inner = httpx2.AsyncHTTPTransport(
            limits=httpx2.Limits(max_keepalive_connections=0), trust_env=False
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        addresses = await resolve_checked(str(request.url), allow_private=self.allow_private)
        host = request.url.raw_host.decode("ascii").lower().rstrip(".")
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions.setdefault("sni_hostname", host)
        last_error: httpx2.ConnectError | None = None
        for address in addresses:
            pinned = httpx2.Request(
                request.method,
                request.url.copy_with(host=str(address)),
                headers=request.headers,
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx2.ConnectError as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def aclose(self) -> None:
        await self._inner.aclose()

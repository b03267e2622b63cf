"""SSRF guard: refuse URLs that reach private, loopback or metadata addresses.

``check_url`` validates a URL (scheme, host allow-list, every resolved address).
``GuardedTransport`` is an httpx transport that runs the same check on every request,
redirect hops included, and then connects to the address it validated, so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESS = ipaddress.IPv4Address("169.254.169.254")
CGNAT_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")
NAT64_NETWORK = ipaddress.IPv6Network("64:ff9b::/96")
ALLOWED_SCHEMES = frozenset({"http", "https"})


class BlockedAddress(ValueError):
    """A URL was refused; the message says why (e.g. "127.0.0.1 is a loopback address")."""


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` must not be reached from the platform, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64_NETWORK:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = blocked_reason(embedded)
            if reason is not None:
                return f"{address} embeds an IPv4 address: {reason}"
    if address == METADATA_ADDRESS:
        return f"{address} is the cloud metadata address"
    checks = (
        (address.is_loopback, "a loopback"),
        (address.is_link_local, "a link-local"),
        (address.is_multicast, "a multicast"),
        (address.is_unspecified, "an unspecified"),
        (address.version == 4 and address in CGNAT_NETWORK, "a carrier-grade NAT"),
        (address.is_reserved, "a reserved"),
        (address.is_private, "a private"),
        (not address.is_global, "a non-global"),
    )
    for matched, kind in checks:
        if matched:
            return f"{address} is {kind} address"
    return None


def _host_of(url: httpx.URL) -> str:
    """The URL's host in ASCII (IDNA), lower case, without brackets or a trailing dot."""
    return url.raw_host.decode("ascii").lower().rstrip(".")


def _normalise_entry(entry: str) -> str:
    entry = entry.strip().strip("[]").lower().rstrip(".")
    try:
        return entry.encode("idna").decode("ascii") if not entry.isascii() else entry
    except UnicodeError:
        return entry


def host_allowed(host: str, allowed_hosts: Collection[str]) -> bool:
    """Whether ``host`` matches an entry: exactly, or as a subdomain of ``*.domain``."""
    host = host.lower().rstrip(".")
    for raw_entry in allowed_hosts:
        entry = _normalise_entry(raw_entry)
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def _parse(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise BlockedAddress(f"invalid URL: {error}") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise BlockedAddress(f"scheme {parsed.scheme!r} is not allowed; use http or https")
    if not parsed.raw_host:
        raise BlockedAddress("the URL has no host")
    return parsed


async def resolve_checked(
    url: str | httpx.URL,
    *,
    allow_private: bool = False,
    allowed_hosts: Collection[str] | None = None,
) -> list[IPAddress]:
    """Check ``url`` like ``check_url`` and return the addresses it resolved to, in order."""
    parsed = _parse(url)
    host = _host_of(parsed)
    if allowed_hosts is not None and not host_allowed(host, allowed_hosts):
        raise BlockedAddress(f"host {host!r} is not in the allowed hosts")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise BlockedAddress(f"cannot resolve host {host!r}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        # Scoped IPv6 addresses come back as "fe80::1%eth0".
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise BlockedAddress(f"cannot resolve host {host!r}")
    if not allow_private:
        for address in addresses:
            reason = blocked_reason(address)
            if reason is not None:
                raise BlockedAddress(reason if str(address) == host else f"{host}: {reason}")
    return addresses


async def check_url(
    url: str,
    *,
    allow_private: bool = False,
    allowed_hosts: Collection[str] | None = None,
) -> None:
    """Raise ``BlockedAddress`` unless ``url`` may be fetched from the platform.

    Only http and https with a host are accepted. When ``allowed_hosts`` is given the host
    must match one entry (case-insensitive; ``*.example.com`` matches its subdomains).
    Every address the host resolves to must be public unless ``allow_private`` is set;
    literal IPs in any form the resolver accepts (``2130706433``, ``0x7f.1``) count too.
    """
    await resolve_checked(url, allow_private=allow_private, allowed_hosts=allowed_hosts)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request and connects to the checked address.

    Each request (each redirect hop is its own request) goes through ``resolve_checked``;
    it is then sent to the validated IP with the original ``Host`` header and TLS server
    name, so certificates are still verified against the host name.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_hosts: Collection[str] | None = None,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.allowed_hosts = allowed_hosts
        # No keep-alive: a pooled connection, keyed by IP, must not be reused for another
        # host name whose certificate it never presented.
        self._inner = inner or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_keepalive_connections=0)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check ``request.url`` and send the request to the first reachable checked address."""
        addresses = await resolve_checked(
            request.url, allow_private=self.allow_private, allowed_hosts=self.allowed_hosts
        )
        host = _host_of(request.url)
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions.setdefault("sni_hostname", host)
        last_error: httpx.ConnectError | None = None
        for address in addresses:
            pinned = httpx.Request(
                request.method,
                request.url.copy_with(host=str(address)),
                headers=request.headers,
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx.ConnectError as error:
                last_error = error
        assert last_error is not None
        raise last_error

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()

"""SSRF guard: refuse URLs that reach private, loopback or metadata addresses.

``check_url`` validates a URL (scheme, host allow-list, every resolved address) against
an ``OutboundPolicy``. The HTTP clients that apply it to every request (and connect to the
address it checked) are built by ``agentmesh.shared.outbound``, the one factory of every
outbound client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass, field

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance metadata (AWS, GCP, Azure, ...; AWS's IPv6 one). Refused always, even
#: with ``allow_private`` or an allow-list entry: it hands out the machine's credentials.
METADATA_ADDRESSES = frozenset(
    {ipaddress.IPv4Address("169.254.169.254"), ipaddress.IPv6Address("fd00:ec2::254")}
)
CGNAT_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")
NAT64_NETWORK = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64_NETWORK = ipaddress.IPv6Network("64:ff9b:1::/48")
ALLOWED_SCHEMES = frozenset({"http", "https"})


class BlockedAddress(ValueError):
    """A URL was refused; the message says why (e.g. "127.0.0.1 is a loopback address")."""


class UnresolvableHost(BlockedAddress):
    """The URL's host does not resolve (now): refused, as nothing was checked."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries: IPv4-mapped, 6to4, NAT64, IPv4-compatible."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_NETWORK or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_metadata(address: IPAddress) -> bool:
    """Whether ``address`` is a metadata address, in any IPv6 form that embeds it."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None and embedded in METADATA_ADDRESSES:
            return True
    return address in METADATA_ADDRESSES


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` must not be reached from the platform, or None when it is public."""
    if is_metadata(address):
        return f"{address} is the cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = blocked_reason(embedded)
            if reason is not None:
                return f"{address} embeds an IPv4 address: {reason}"
        if address in LOCAL_NAT64_NETWORK:
            return f"{address} is a local-use NAT64 address"
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


@dataclass(frozen=True)
class OutboundPolicy:
    """Which non-public addresses the platform may reach (an operator's choice).

    ``allow_private`` opens every private address (tests, labs). ``allowed_private`` is
    ``AGENTMESH_ALLOWED_PRIVATE_HOSTS``: entries ``host:port`` (a name or an IP, e.g.
    ``127.0.0.1:11434`` or ``[::1]:8000``; the port must match) and CIDR ranges
    (``10.0.0.0/8``, any port). Metadata addresses stay refused whatever the policy.
    """

    allow_private: bool = False
    allowed_private: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = field(default=(), init=False, repr=False)
    endpoints: frozenset[tuple[str, int]] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        networks: list[IPNetwork] = []
        endpoints: set[tuple[str, int]] = set()
        for raw in self.allowed_private:
            kind, value = parse_private_entry(raw)
            if kind == "network":
                networks.append(value)  # type: ignore[arg-type]
            else:
                endpoints.add(value)  # type: ignore[arg-type]
        object.__setattr__(self, "networks", tuple(networks))
        object.__setattr__(self, "endpoints", frozenset(endpoints))

    @classmethod
    def of(cls, value: bool | OutboundPolicy | None) -> OutboundPolicy:
        """A policy from a policy, or from the older ``allow_private`` flag."""
        return value if isinstance(value, OutboundPolicy) else cls(allow_private=bool(value))

    def permits(self, address: IPAddress, host: str, port: int) -> bool:
        """Whether a non-public ``address`` (``host:port`` in the URL) is allowed."""
        if is_metadata(address):
            return False
        if self.allow_private:
            return True
        if (host, port) in self.endpoints or (str(address), port) in self.endpoints:
            return True
        return any(address.version == net.version and address in net for net in self.networks)


def parse_private_entry(raw: str) -> tuple[str, IPNetwork | tuple[str, int]]:
    """``("network", 10.0.0.0/8)`` or ``("endpoint", ("127.0.0.1", 11434))``; ValueError
    names the entry when it is neither a CIDR range nor ``host:port``."""
    entry = raw.strip().lower()
    if "/" in entry:
        try:
            return "network", ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{raw!r} is not a CIDR range") from None
    host, sep, port = entry.rpartition(":")
    host = host.strip("[]").rstrip(".")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{raw!r} is neither host:port nor a CIDR range")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        host = _normalise_entry(host)
    return "endpoint", (host, int(port))


def split_entries(value: object) -> tuple[str, ...]:
    """A settings value (comma- or space-separated string, or a list) as entries."""
    if value is None:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    entries = tuple(str(item).strip() for item in items if str(item).strip())
    for entry in entries:
        parse_private_entry(entry)
    return entries


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
    allow_private: bool | OutboundPolicy = False,
    allowed_hosts: Collection[str] | None = None,
) -> list[IPAddress]:
    """Check ``url`` like ``check_url`` and return the addresses it resolved to, in order."""
    policy = OutboundPolicy.of(allow_private)
    parsed = _parse(url)
    host = _host_of(parsed)
    if allowed_hosts is not None and not host_allowed(host, allowed_hosts):
        raise BlockedAddress(f"host {host!r} is not in the allowed hosts")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses: list[IPAddress] = []
    try:  # a canonical IP literal needs no resolver (other forms, "0x7f.1", go through it)
        addresses.append(ipaddress.ip_address(host))
    except ValueError:
        addresses = await _resolve(host, port)
    if not addresses:
        raise UnresolvableHost(f"cannot resolve host {host!r}")
    for address in addresses:
        reason = blocked_reason(address)
        if reason is not None and not policy.permits(address, host, port):
            raise BlockedAddress(reason if str(address) == host else f"{host}: {reason}")
    return addresses


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        raise UnresolvableHost(f"cannot resolve host {host!r}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        # Scoped IPv6 addresses come back as "fe80::1%eth0".
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def check_url(
    url: str,
    *,
    allow_private: bool | OutboundPolicy = False,
    allowed_hosts: Collection[str] | None = None,
) -> None:
    """Raise ``BlockedAddress`` unless ``url`` may be fetched from the platform.

    Only http and https with a host are accepted. When ``allowed_hosts`` is given the host
    must match one entry (case-insensitive; ``*.example.com`` matches its subdomains).
    Every address the host resolves to must be public unless the policy (``allow_private``:
    a flag or an ``OutboundPolicy``) allows it; literal IPs in any form the resolver
    accepts (``2130706433``, ``0x7f.1``) count too.
    """
    await resolve_checked(url, allow_private=allow_private, allowed_hosts=allowed_hosts)

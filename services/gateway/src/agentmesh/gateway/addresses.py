"""Client addresses: which peers are trusted proxies, and the key of a per-IP bucket."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 clients are limited per /64: one subscriber usually holds a whole /64, and
#: could otherwise take a fresh bucket for every address in it.
IPV6_BUCKET_PREFIX = 64


def parse_network(value: str) -> Network:
    """``10.0.0.7`` (one address) or ``10.0.0.0/8`` (a range); ValueError otherwise."""
    return ipaddress.ip_network(value.strip(), strict=False)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """Peers whose ``X-Forwarded-*`` headers are believed: addresses or CIDR ranges."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = [parse_network(entry) for entry in entries]

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str) or not self.networks:
            return False
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)


def ip_bucket(host: str) -> str:
    """The rate-limit key of a client address: IPv4 as is, IPv6 by its /64."""
    address = _address(host)
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_BUCKET_PREFIX), strict=False)
        return str(network)
    return str(address)

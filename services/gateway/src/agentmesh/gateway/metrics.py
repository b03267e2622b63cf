"""The gateway's Prometheus metrics (served on ``AGENTMESH_METRICS_PORT`` only: the
gateway's own port is public).

- ``agentmesh_gateway_rate_limited_total{group}``: requests refused with a 429 (the
  failed-authentication limit counts as group ``auth_failures``);
- ``agentmesh_gateway_breaker_open{upstream, group}``: 1 while that circuit is open or
  half-open, read at scrape time from every live proxy;
- ``agentmesh_gateway_api_key_cache_total{result}``: API-key lookups served from the cache
  (``hit``), by an exchange with identity (``miss``), or refused from the negative cache
  (``refused``);
- ``agentmesh_gateway_limits_fallback``: 1 while this replica decides rate limits alone
  because the shared store (JetStream KV) is unreachable, and
  ``agentmesh_gateway_limits_fallbacks_total``: requests that found it unreachable.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

RATE_LIMITED = Counter(
    "agentmesh_gateway_rate_limited", "Requests refused by a rate limit.", ["group"]
)
API_KEY_CACHE = Counter(
    "agentmesh_gateway_api_key_cache", "API-key lookups by outcome.", ["result"]
)

LIMITS_FALLBACK = Gauge(
    "agentmesh_gateway_limits_fallback",
    "1 while rate limits are per replica because the shared store is unreachable.",
)
LIMITS_FALLBACKS = Counter(
    "agentmesh_gateway_limits_fallbacks",
    "Times the shared rate-limit store was found unreachable (then per-replica limits).",
)

_PROXIES: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_breakers(proxy: Any) -> None:
    """Report ``proxy.breakers`` at every scrape."""
    _PROXIES.add(proxy)


class BreakerCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "agentmesh_gateway_breaker_open",
            "1 while the circuit of an upstream's route group is open or half-open.",
            labels=["upstream", "group"],
        )
        seen: dict[tuple[str, str], float] = {}
        for proxy in list(_PROXIES):
            for (upstream, group), breaker in list(proxy.breakers.items()):
                is_open = 0.0 if breaker.state == "closed" else 1.0
                seen[(upstream, group)] = max(seen.get((upstream, group), 0.0), is_open)
        for (upstream, group), value in sorted(seen.items()):
            family.add_metric([upstream, group], value)
        yield family


REGISTRY.register(BreakerCollector())

"""Token buckets per principal (or per IP on public routes), held in this replica.

A request with an API key takes from the key's bucket and from its user's; IPv6
clients share one bucket per /64 (see ``addresses.ip_bucket``).

These buckets are this replica's own: the gateway uses them when limits are not shared
(``GATEWAY_SHARED_LIMITS=false``) or while the shared store is unreachable
(``shared_limits.SharedLimits``); then N replicas admit up to N times the rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from agentmesh.gateway.settings import RateLimit


@dataclass
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int = 0

    def headers(self) -> dict[str, str]:
        """IETF ``RateLimit-*`` headers (draft-ietf-httpapi-ratelimit-headers)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """Buckets keyed by ``(group, principal)``; the least recently used are dropped."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def take(self, group: str, key: str | tuple[str, ...], limit: RateLimit) -> Decision:
        """One token from the bucket of ``key``, or from each of several keys (an API key
        and its user): allowed only if every one has a token, and then all pay."""
        keys = (key,) if isinstance(key, str) else key
        now = time.monotonic()
        levels = []
        for name in keys:
            tokens, updated = self._buckets.pop((group, name), (float(limit.burst), now))
            levels.append(min(float(limit.burst), tokens + (now - updated) * limit.rate))
        allowed = all(tokens >= 1.0 for tokens in levels)
        if allowed:
            levels = [tokens - 1.0 for tokens in levels]
        for name, tokens in zip(keys, levels, strict=True):
            self._buckets[(group, name)] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        tokens = min(levels)
        full_in = (limit.burst - tokens) / limit.rate
        return Decision(
            allowed=allowed,
            limit=limit.burst,
            remaining=int(tokens),
            reset_seconds=math.ceil(full_in),
            retry_after=0 if allowed else max(1, math.ceil((1.0 - tokens) / limit.rate)),
        )

"""Rate limits and refused API keys shared by every gateway replica, in JetStream KV.

Each limited principal has one token bucket in the ``agentmesh_gateway_limits`` bucket
(key ``<scope>.<group>.<sha256 of the principal>``, value ``"<tokens> <epoch seconds>"``).
A replica does not go to NATS on every request: it *leases* up to ``batch`` tokens at a
time with a compare-and-set on the key's revision, and spends them locally. A lease lives
``batch / rate`` seconds at most, so tokens a replica took but did not spend are lost, not
saved up. Together N replicas admit at most ``burst + rate * t`` plus one batch in any
span ``t`` (the tolerance, see docs/scaling.md), and never N times the limit.

A refusal is decided locally when the last state this replica saw says the bucket is
empty: other replicas only take tokens, so the real bucket holds no more than that.

When NATS or the bucket is unreachable (or an operation takes longer than ``timeout``),
the gateway logs it once, counts it, and uses its per-replica buckets
(``RateLimiter``) for ``retry_seconds`` before trying the store again: it fails open to
per-replica limits, never to no limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError

from agentmesh.gateway.metrics import LIMITS_FALLBACK, LIMITS_FALLBACKS
from agentmesh.gateway.ratelimit import Decision, RateLimiter
from agentmesh.gateway.settings import RateLimit

logger = logging.getLogger("agentmesh.gateway.limits")

BUCKET = "agentmesh_gateway_limits"
#: Compare-and-set attempts before one request is decided by the local buckets.
MAX_ATTEMPTS = 8


class StoreUnavailable(Exception):
    """NATS, JetStream or the bucket cannot be used right now."""


class Contended(Exception):
    """Other replicas won every compare-and-set on one key: this request is decided by
    the local buckets (the store itself is fine)."""


@dataclass
class Lease:
    tokens: int
    expires: float  # time.monotonic()


@dataclass
class Seen:
    """The last state of a key this replica read or wrote."""

    revision: int | None  # None: the key did not exist
    tokens: float
    at: float  # epoch seconds


def _level(seen: Seen, limit: RateLimit, now: float) -> float:
    return min(float(limit.burst), seen.tokens + max(0.0, now - seen.at) * limit.rate)


def _parse(value: bytes | None, burst: int, now: float) -> tuple[float, float]:
    try:
        tokens, at = (value or b"").decode().split()
        return float(tokens), float(at)
    except ValueError:  # unreadable: treat as a full bucket
        return float(burst), now


class SharedLimits:
    """Token buckets in KV, leased in batches; the per-replica ``fallback`` when away."""

    def __init__(
        self,
        jetstream: Callable[[], Any] | None,
        fallback: RateLimiter,
        *,
        scope: str = "default",
        batch: int = 4,
        timeout: float = 0.25,
        retry_seconds: float = 1.0,
        ttl_seconds: float = 3600.0,
        max_bytes: int = 256 * 1024 * 1024,
        max_keys: int = 100_000,
    ) -> None:
        self._jetstream = jetstream
        self.fallback = fallback
        self.scope = scope
        self.batch = batch
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self._kv: Any = None
        self._kv_js: Any = None
        self._leases: LRUCache[str, Lease] = LRUCache(max_keys)
        self._seen: LRUCache[str, Seen] = LRUCache(max_keys)
        self._degraded_until = 0.0
        #: True while decisions come from the per-replica buckets.
        self.falling_back = False
        #: Round trips to the store (leases and refused-key lookups), for the bench.
        self.round_trips = 0

    @property
    def enabled(self) -> bool:
        """False when sharing is turned off (``GATEWAY_SHARED_LIMITS=false``)."""
        return self._jetstream is not None

    # ------------------------------------------------------------------ rate limits

    def batch_for(self, limit: RateLimit) -> int:
        """Tokens leased at once: ``batch``, but at most a quarter of the burst, so a
        small burst is shared exactly."""
        return max(1, min(self.batch, limit.burst // 4))

    async def take(self, group: str, key: str | tuple[str, ...], limit: RateLimit) -> Decision:
        """Like ``RateLimiter.take``: one token from each of ``key``'s buckets, or none."""
        keys = (key,) if isinstance(key, str) else key
        if not self.enabled or time.monotonic() < self._degraded_until:
            return self.fallback.take(group, keys, limit)
        kv_keys = [self._key(group, name) for name in keys]
        try:
            levels = [await self._ensure_token(kv_key, limit) for kv_key in kv_keys]
        except StoreUnavailable as exc:
            self._degrade(exc)
            return self.fallback.take(group, keys, limit)
        except Contended:
            return self.fallback.take(group, keys, limit)
        self._recovered()
        # Decided after the last await: a concurrent request may have spent a lease.
        leases = [self._leases.get(kv_key) for kv_key in kv_keys]
        allowed = all(lease is not None and lease.tokens >= 1 for lease in leases)
        if allowed:
            for lease in leases:
                lease.tokens -= 1  # type: ignore[union-attr]
            levels = [level - 1.0 for level in levels]
        tokens = max(0.0, min(levels))
        return Decision(
            allowed=allowed,
            limit=limit.burst,
            remaining=int(tokens),
            reset_seconds=math.ceil((limit.burst - tokens) / limit.rate),
            retry_after=0 if allowed else max(1, math.ceil((1.0 - tokens) / limit.rate)),
        )

    def _key(self, group: str, name: str) -> str:
        digest = hashlib.sha256(name.encode()).hexdigest()[:40]
        return f"{self.scope}.{group}.{digest}"

    async def _ensure_token(self, kv_key: str, limit: RateLimit) -> float:
        """Tokens this replica may spend for ``kv_key`` (leased ones, after leasing more
        when none is left), as a level comparable to a bucket's (>= 1: may pass)."""
        now = time.monotonic()
        lease = self._leases.get(kv_key)
        if lease is not None and lease.expires > now and lease.tokens >= 1:
            return float(lease.tokens)
        granted, left = await self._lease(kv_key, limit)
        if granted == 0:
            return left  # < 1: refused
        lease = self._leases.get(kv_key)
        expires = time.monotonic() + self.batch_for(limit) / limit.rate
        if lease is not None and lease.expires > now:  # a concurrent lease: add to it
            lease.tokens, lease.expires = lease.tokens + granted, expires
        else:
            self._leases[kv_key] = lease = Lease(granted, expires)
        return float(lease.tokens) + left

    async def _lease(self, kv_key: str, limit: RateLimit) -> tuple[int, float]:
        """Take up to a batch of tokens from the shared bucket: (granted, tokens left)."""
        seen = self._seen.get(kv_key)
        if seen is not None and _level(seen, limit, time.time()) < 1.0:
            return 0, _level(seen, limit, time.time())  # it holds no more than we saw
        kv = await self._bucket()
        fresh = seen is None
        for _ in range(MAX_ATTEMPTS):
            if fresh or seen is None:
                seen = await self._read(kv, kv_key, limit)
            now = time.time()
            level = _level(seen, limit, now)
            granted = min(self.batch_for(limit), math.floor(level))
            if granted < 1:
                self._seen[kv_key] = seen
                return 0, level
            left = level - granted
            value = f"{left:.6f} {now:.6f}".encode()
            try:
                if seen.revision is None:
                    revision = await self._call(kv.create(kv_key, value))
                else:
                    revision = await self._call(kv.update(kv_key, value, last=seen.revision))
            except KeyWrongLastSequenceError:  # another replica took tokens meanwhile
                fresh = True
                continue
            self._seen[kv_key] = Seen(revision, left, now)
            return granted, left
        raise Contended(kv_key)

    async def _read(self, kv: Any, kv_key: str, limit: RateLimit) -> Seen:
        try:
            entry = await self._call(kv.get(kv_key))
        except KeyNotFoundError:  # never used, or idle past the bucket's TTL: full
            return Seen(None, float(limit.burst), time.time())
        tokens, at = _parse(entry.value, limit.burst, time.time())
        return Seen(entry.revision, tokens, at)

    # ------------------------------------------------------------------ refused API keys

    async def refused_until(self, digest: str) -> float | None:
        """Until when (epoch seconds) some replica remembers this API key as refused."""
        if not self.enabled or time.monotonic() < self._degraded_until:
            return None
        try:
            kv = await self._bucket()
            entry = await self._call(kv.get(f"{self.scope}.refused.{digest}"))
            until = float(entry.value.decode())
        except (KeyNotFoundError, ValueError):
            return None
        except StoreUnavailable as exc:
            self._degrade(exc)
            return None
        return until if until > time.time() else None

    async def remember_refused(self, digest: str, until: float) -> None:
        """Tell every replica this API key is refused until ``until`` (epoch seconds)."""
        if not self.enabled or time.monotonic() < self._degraded_until:
            return
        try:
            kv = await self._bucket()
            await self._call(kv.put(f"{self.scope}.refused.{digest}", f"{until:.3f}".encode()))
        except StoreUnavailable as exc:
            self._degrade(exc)

    # ------------------------------------------------------------------ the store

    async def _call(self, operation: Any) -> Any:
        self.round_trips += 1
        try:
            return await asyncio.wait_for(operation, self.timeout)
        except (KeyNotFoundError, KeyWrongLastSequenceError, BucketNotFoundError):
            raise
        except Exception as exc:  # timeouts, lost connections, JetStream errors
            raise StoreUnavailable(type(exc).__name__) from exc

    async def _bucket(self) -> Any:
        js = self._jetstream() if self._jetstream is not None else None
        if js is None:
            raise StoreUnavailable("NATS is not connected")
        if self._kv is not None and self._kv_js is js:
            return self._kv
        try:
            kv = await self._call(js.key_value(BUCKET))
        except BucketNotFoundError:
            config = KeyValueConfig(
                bucket=BUCKET,
                history=1,
                ttl=self.ttl_seconds,
                max_bytes=self.max_bytes,
                storage=StorageType.MEMORY,
            )
            try:
                kv = await self._call(js.create_key_value(config))
            except StoreUnavailable:  # created meanwhile by another replica?
                kv = await self._call(js.key_value(BUCKET))
        self._kv, self._kv_js = kv, js
        return kv

    def _degrade(self, exc: Exception) -> None:
        self._degraded_until = time.monotonic() + self.retry_seconds
        self._leases.clear()
        self._seen.clear()
        self._kv = None
        LIMITS_FALLBACKS.inc()
        if not self.falling_back:
            self.falling_back = True
            LIMITS_FALLBACK.set(1)
            logger.warning(
                "shared rate limits unreachable; falling back to per-replica limits",
                extra={"error": str(exc), "retry_seconds": self.retry_seconds},
            )

    def _recovered(self) -> None:
        if self.falling_back:
            self.falling_back = False
            LIMITS_FALLBACK.set(0)
            logger.warning("shared rate limits reachable again; per-replica limits dropped")

"""Rate limits and refused API keys shared by every gateway replica, in JetStream KV.

Each limited principal has one token bucket in the ``agentmesh_gateway_limits`` bucket
(key ``<scope>.<group>.<sha256 of the principal>``, value ``"<tokens> <epoch seconds>"``;
tokens may go below zero, a debt the refill pays back first).

A request never waits for NATS in the common case. Each replica keeps, per key, the level
it last read from the store and what it admitted since (``pending``); it decides from that
at once, and a background task subtracts ``pending`` from the stored bucket with a
compare-and-set on the key's revision (re-reading on a conflict), which also brings back
what the other replicas took; admissions of the next ``sync_seconds`` join one write. A
replica admits at most ``batch`` requests per key that the store has not confirmed yet;
the next one waits for the write. Other replicas only ever take tokens, so the level a
replica knows is never below the real one: a refusal it decides alone is right, and an
admission is wrong by at most ``batch`` per replica.
Together N replicas admit at most ``burst + N * batch`` at once and ``rate`` on average
(the debt repays any excess), never N times the limit (docs/scaling.md).

When NATS or the bucket is unreachable (or an operation takes longer than ``timeout``),
the gateway logs it once, counts it, and uses its per-replica buckets
(``RateLimiter``) for ``retry_seconds`` before trying the store again: it fails open to
per-replica limits, never to no limit. Those buckets are charged for every admission
while the store is used as well, so the switch does not hand out a fresh burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError

from agentmesh.gateway.metrics import LIMITS_FALLBACK, LIMITS_FALLBACKS
from agentmesh.gateway.ratelimit import Decision, RateLimiter
from agentmesh.gateway.settings import RateLimit

logger = logging.getLogger("agentmesh.gateway.limits")

BUCKET = "agentmesh_gateway_limits"
#: Compare-and-set attempts of one write before it gives up (left pending, tried again
#: with the next admission).
MAX_ATTEMPTS = 8


class StoreUnavailable(Exception):
    """NATS, JetStream or the bucket cannot be used right now."""


class Contended(Exception):
    """Other replicas won every compare-and-set on one key (the store itself is fine)."""


@dataclass
class Bucket:
    """What this replica knows of one shared bucket."""

    revision: int | None  # of the stored entry; None: not stored (a full bucket)
    tokens: float  # the stored level at ``at``
    at: float  # epoch seconds
    known: bool = False  # read from or written to the store at least once
    pending: int = 0  # admitted here, not yet subtracted in the store
    flush: asyncio.Task[None] | None = None
    #: Set when a request needs the write now (a batch is pending): ends the wait.
    hurry: asyncio.Event = field(default_factory=asyncio.Event)

    def level(self, limit: RateLimit, now: float) -> float:
        """Tokens left as far as this replica knows (its own pending ones spent)."""
        refilled = self.tokens + max(0.0, now - self.at) * limit.rate
        return min(float(limit.burst), refilled) - self.pending


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
        timeout: float = 0.5,
        sync_seconds: float = 0.01,
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
        #: How long admissions may gather before their write (unless a batch is pending).
        self.sync_seconds = sync_seconds
        self.retry_seconds = retry_seconds
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self._kv: Any = None
        self._kv_js: Any = None
        self._buckets: LRUCache[str, Bucket] = LRUCache(max_keys)
        self._tasks: set[asyncio.Task[None]] = set()
        self._degraded_until = 0.0
        #: True while decisions come from the per-replica buckets.
        self.falling_back = False
        #: Round trips to the store (bucket writes and refused-key lookups), for the bench.
        self.round_trips = 0

    @property
    def enabled(self) -> bool:
        """False when sharing is turned off (``GATEWAY_SHARED_LIMITS=false``)."""
        return self._jetstream is not None

    # ------------------------------------------------------------------ rate limits

    def batch_for(self, limit: RateLimit) -> int:
        """Admissions a replica may make ahead of the store: ``batch``, but at most a
        quarter of the burst, so a small burst is shared tightly."""
        return max(1, min(self.batch, limit.burst // 4))

    async def take(self, group: str, key: str | tuple[str, ...], limit: RateLimit) -> Decision:
        """Like ``RateLimiter.take``: one token from each of ``key``'s buckets, or none."""
        keys = (key,) if isinstance(key, str) else key
        if not self.enabled or time.monotonic() < self._degraded_until:
            return self.fallback.take(group, keys, limit)
        if self._connection() is None:  # known to be away: no admission ahead of it
            self._degrade(StoreUnavailable("NATS is not connected"))
            return self.fallback.take(group, keys, limit)
        kv_keys = [self._key(group, name) for name in keys]
        batch = self.batch_for(limit)
        for kv_key in kv_keys:  # too far ahead of the store: wait for its write
            bucket = self._buckets.get(kv_key)
            if bucket is not None and bucket.pending >= batch:
                await self._flushed(kv_key, bucket, limit)
        if not self.enabled or time.monotonic() < self._degraded_until:
            return self.fallback.take(group, keys, limit)
        now = time.time()
        buckets = [self._bucket_of(kv_key, limit, now) for kv_key in kv_keys]
        if any(b.pending >= batch for b in buckets):  # still unconfirmed: decide alone
            return self.fallback.take(group, keys, limit)
        levels = [b.level(limit, now) for b in buckets]
        allowed = all(level >= 1.0 for level in levels)
        if allowed:
            for kv_key, bucket in zip(kv_keys, buckets, strict=True):
                bucket.pending += 1
                self._start_flush(kv_key, bucket, limit)
                if bucket.pending >= batch:
                    bucket.hurry.set()
            # The replica's own buckets count its admissions too, so that falling back
            # to them starts from what this replica let through, not from a full burst.
            self.fallback.take(group, keys, limit)
            levels = [level - 1.0 for level in levels]
        lowest = min(levels)  # below zero while a debt is repaid
        tokens = max(0.0, lowest)
        return Decision(
            allowed=allowed,
            limit=limit.burst,
            remaining=int(tokens),
            reset_seconds=math.ceil((limit.burst - lowest) / limit.rate),
            retry_after=0 if allowed else max(1, math.ceil((1.0 - lowest) / limit.rate)),
        )

    def _key(self, group: str, name: str) -> str:
        digest = hashlib.sha256(name.encode()).hexdigest()[:40]
        return f"{self.scope}.{group}.{digest}"

    def _bucket_of(self, kv_key: str, limit: RateLimit, now: float) -> Bucket:
        bucket = self._buckets.get(kv_key)
        if bucket is None:  # never seen here: full until the store says otherwise
            bucket = self._buckets[kv_key] = Bucket(None, float(limit.burst), now)
        return bucket

    def _start_flush(self, kv_key: str, bucket: Bucket, limit: RateLimit) -> asyncio.Task[None]:
        if bucket.flush is None or bucket.flush.done():
            bucket.flush = asyncio.create_task(self._flush(kv_key, bucket, limit))
            self._tasks.add(bucket.flush)
            bucket.flush.add_done_callback(self._tasks.discard)
        return bucket.flush

    async def _flushed(self, kv_key: str, bucket: Bucket, limit: RateLimit) -> None:
        task = self._start_flush(kv_key, bucket, limit)
        bucket.hurry.set()
        await asyncio.wait({task})

    async def _flush(self, kv_key: str, bucket: Bucket, limit: RateLimit) -> None:
        """Subtract ``pending`` in the store, until none is left (runs in the background;
        one per key at a time)."""
        try:
            while bucket.pending > 0:
                if bucket.pending < self.batch_for(limit) and self.sync_seconds > 0:
                    # Let admissions gather into one write (a hot client's batch).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(bucket.hurry.wait(), self.sync_seconds)
                bucket.hurry.clear()
                await self._write(kv_key, bucket, limit)
        except StoreUnavailable as exc:
            self._degrade(exc)
        except Contended:
            logger.info("rate-limit bucket contended", extra={"key": kv_key})
        else:
            self._recovered()

    async def _write(self, kv_key: str, bucket: Bucket, limit: RateLimit) -> None:
        kv = await self._store()
        fresh = not bucket.known
        for _ in range(MAX_ATTEMPTS):
            if fresh:
                bucket.revision, bucket.tokens, bucket.at = await self._read(kv, kv_key, limit)
                bucket.known = True
            taken, now = bucket.pending, time.time()
            stored = min(float(limit.burst), bucket.tokens + max(0.0, now - bucket.at) * limit.rate)
            value = f"{stored - taken:.6f} {now:.6f}".encode()
            try:
                if bucket.revision is None:
                    revision = await self._call(kv.create(kv_key, value))
                else:
                    revision = await self._call(kv.update(kv_key, value, last=bucket.revision))
            except KeyWrongLastSequenceError:  # another replica took tokens meanwhile
                fresh = True
                continue
            bucket.revision, bucket.tokens, bucket.at = revision, stored - taken, now
            bucket.known = True
            bucket.pending -= taken
            return
        raise Contended(kv_key)

    async def _read(
        self, kv: Any, kv_key: str, limit: RateLimit
    ) -> tuple[int | None, float, float]:
        try:
            entry = await self._call(kv.get(kv_key))
        except KeyNotFoundError:  # never used, or idle past the bucket's TTL: full
            return None, float(limit.burst), time.time()
        tokens, at = _parse(entry.value, limit.burst, time.time())
        return entry.revision, tokens, at

    async def aclose(self) -> None:
        """Stop the writes still in flight (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.timeout * 2)

    # ------------------------------------------------------------------ refused API keys

    async def refused_until(self, digest: str) -> float | None:
        """Until when (epoch seconds) some replica remembers this API key as refused."""
        if not self.enabled or time.monotonic() < self._degraded_until:
            return None
        try:
            kv = await self._store()
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
            kv = await self._store()
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

    def _connection(self) -> Any:
        return self._jetstream() if self._jetstream is not None else None

    async def _store(self) -> Any:
        js = self._connection()
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
        self._buckets.clear()
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

"""The deny list: access tokens every service refuses before they expire.

Identity writes an entry to the JetStream key-value bucket ``agentmesh_denylist`` when a
user is deactivated (``user.<id>``: that user's tokens issued up to then), a login
session ends (``sid.<session id>``) or an API key is revoked (``akid.<key id>``). Every
replica of every service watches the bucket into memory (``DenyList``), and the shared
token verifier checks a token against it on every request, cached or not: a lookup in a
dict, no round trip.

Entries say until when they matter (the longest an affected token can live); the bucket
drops them after ``BUCKET_TTL_SECONDS`` anyway.

When NATS is away, a replica keeps refusing what it already knew (the last known list)
and accepts other valid tokens: it fails open for revocations it has not heard of, and
catches up as soon as the watch resumes. Identity itself checks sessions and users in its
database on its own routes, so logging in, refreshing and exchanging keys stay closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

logger = logging.getLogger("agentmesh.denylist")

BUCKET = "agentmesh_denylist"
#: Identity's longest access-token lifetime (24 h), plus verifiers' leeway.
BUCKET_TTL_SECONDS = 24 * 3600 + 300
#: How often a quiet watch checks that its consumer still exists (NATS restarted?).
WATCH_CHECK_SECONDS = 15.0


def user_key(user_id: uuid.UUID | str) -> str:
    return f"user.{user_id}"


def session_key(session_id: uuid.UUID | str) -> str:
    return f"sid.{session_id}"


def api_key_key(api_key_id: str) -> str:
    return f"akid.{api_key_id}"


async def bucket(js: JetStreamContext, *, replicas: int = 1) -> KeyValue:
    """The deny-list bucket, created on first use (by whichever service comes first)."""
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=BUCKET,
            history=1,
            ttl=BUCKET_TTL_SECONDS,
            storage=StorageType.FILE,
            replicas=replicas,
        )
        try:
            return await js.create_key_value(config)
        except Exception:  # created meanwhile by another replica
            return await js.key_value(BUCKET)


async def deny(
    js: JetStreamContext,
    key: str,
    *,
    until: float,
    issued_before: float | None = None,
    replicas: int = 1,
) -> None:
    """Refuse tokens matching ``key`` until ``until`` (epoch seconds); for a user, only
    those issued at or before ``issued_before``."""
    kv = await bucket(js, replicas=replicas)
    await kv.put(key, json.dumps({"until": until, "issued_before": issued_before}).encode())


class DenyList:
    """The bucket's entries in memory, kept current by a KV watch."""

    def __init__(self, *, replicas: int = 1) -> None:
        self.replicas = replicas
        #: key -> (until, issued_before)
        self._entries: dict[str, tuple[float, float | None]] = {}
        self._task: asyncio.Task[None] | None = None
        #: True once the watch has delivered everything the bucket held.
        self.loaded = asyncio.Event()

    # ------------------------------------------------------------------ checking

    def refusal(
        self,
        *,
        user_id: uuid.UUID | str,
        issued_at: float | None,
        session_id: str | None = None,
        api_key_id: str | None = None,
    ) -> str | None:
        """Why a token with these claims is refused, or None if it is not."""
        if not self._entries:
            return None
        now = time.time()
        entry = self._live(user_key(user_id), now)
        if entry is not None and (issued_at is None or entry[1] is None or issued_at <= entry[1]):
            return "account is not active"
        if session_id and self._live(session_key(session_id), now) is not None:
            return "session ended"
        if api_key_id and self._live(api_key_key(api_key_id), now) is not None:
            return "API key revoked"
        return None

    def _live(self, key: str, now: float) -> tuple[float, float | None] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] <= now:
            del self._entries[key]
            return None
        return entry

    def apply(self, key: str, value: bytes | None) -> None:
        """One watched update: a put (``value``) or a delete/purge (None)."""
        if value is None:
            self._entries.pop(key, None)
            return
        try:
            body: dict[str, Any] = json.loads(value)
            until = float(body["until"])
            before = body.get("issued_before")
            entry = (until, None if before is None else float(before))
        except (ValueError, KeyError, TypeError):
            logger.warning("malformed deny-list entry", extra={"key": key})
            return
        if until > time.time():
            self._entries[key] = entry

    def prune(self) -> None:
        now = time.time()
        for key in [k for k, (until, _) in self._entries.items() if until <= now]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ watching

    def start(self, js: JetStreamContext) -> None:
        """Watch the bucket in the background until ``stop``."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch_forever(js), name="denylist-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: unsubscribing from a connection that is going away can hang, and a
            # second lifespan of the same app (tests) must still shut down.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait({task}, timeout=5)

    async def _watch_forever(self, js: JetStreamContext) -> None:
        while True:
            try:
                await self._watch(js)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the last known entries and try again (see the module docstring).
                logger.warning(
                    "deny-list watch interrupted; retrying", extra={"error": type(exc).__name__}
                )
                await asyncio.sleep(1.0)

    async def _watch(self, js: JetStreamContext) -> None:
        import nats.errors

        kv = await bucket(js, replicas=self.replicas)
        watcher = await kv.watchall()
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=WATCH_CHECK_SECONDS)
                except nats.errors.TimeoutError:
                    self.prune()
                    sub = watcher._sub
                    assert sub is not None  # watchall() subscribed before returning
                    await sub.consumer_info()  # raises when the consumer is gone
                    continue
                if entry is None:  # everything the bucket held has been delivered
                    self.loaded.set()
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                self.apply(entry.key, None if deleted else entry.value)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watcher.stop(), 2)

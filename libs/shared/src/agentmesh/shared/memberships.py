"""Workspace memberships as every service sees them: an in-memory read model.

Identity is the source of truth. It keeps a JetStream key-value bucket
(``agentmesh_memberships``) in step with its own ``identity.membership.*`` and
``identity.workspace.*`` events: key ``<workspace_id>.<user_id>`` holds the member's role,
and is deleted when they leave, are removed, or the workspace is deleted. Each replica of
every service watches the bucket into a dict, so a request checks membership with a dict
lookup, never a database round trip, and a removal or a lowered role reaches every
replica as fast as NATS delivers it (a few milliseconds; the issue's bound is 2 s).

While the view is not loaded yet (NATS unreachable at start-up), the role in the token is
used: tokens live 15 minutes, so that is the longest a revocation can then take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

logger = logging.getLogger("agentmesh.memberships")

BUCKET = "agentmesh_memberships"
#: Roles in a workspace, weakest first.
ROLES = ("viewer", "member", "admin", "owner")


def membership_key(workspace_id: uuid.UUID | str, user_id: uuid.UUID | str) -> str:
    return f"{workspace_id}.{user_id}"


async def bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The bucket, created on first use (every writer and reader may call this)."""
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=BUCKET, history=1, storage=StorageType.FILE, replicas=replicas)
        )


async def put_role(
    kv: Any, workspace_id: uuid.UUID | str, user_id: uuid.UUID | str, role: str | None
) -> None:
    """Identity's write (``kv``: the ``bucket``): the member's current role, or None when
    they are not a member."""
    key = membership_key(workspace_id, user_id)
    if role is None:
        with contextlib.suppress(KeyNotFoundError):
            await kv.delete(key)
    else:
        await kv.put(key, role.encode())


@dataclass(frozen=True)
class Seen:
    """What the view last heard of one membership: the role (None: removed) and when."""

    role: str | None
    at: datetime


class MembershipView:
    """The replica's copy of every membership, kept current by a bucket watch.

    Removals are kept as ``Seen(None, at)`` (the bucket's delete markers), so a token
    issued before a removal is refused while one issued after a re-invitation is not.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Seen] = {}
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def seen(self, workspace_id: uuid.UUID | str, user_id: uuid.UUID | str) -> Seen | None:
        """The latest the view knows of this membership, or None if it never heard of it."""
        return self._seen.get((str(workspace_id), str(user_id)))

    def role(self, workspace_id: uuid.UUID | str, user_id: uuid.UUID | str) -> str | None:
        """The member's current role, or None when they are not a member (as far as known)."""
        seen = self.seen(workspace_id, user_id)
        return seen.role if seen else None

    def current(self) -> dict[str, str]:
        """Every membership the view holds, as bucket keys and roles."""
        return {
            membership_key(w, u): seen.role
            for (w, u), seen in list(self._seen.items())
            if seen.role is not None
        }

    @property
    def ready(self) -> bool:
        return self.loaded.is_set()

    def apply(self, key: str, value: bytes | None, deleted: bool, at: datetime) -> None:
        workspace_id, _, user_id = key.partition(".")
        role = None if deleted or not value else value.decode()
        self._seen[(workspace_id, user_id)] = Seen(role, at)

    def replace(self, entries: Iterable[tuple[str, bytes | None, bool, datetime]]) -> None:
        self._seen = {}
        for key, value, deleted, at in entries:
            self.apply(key, value, deleted, at)

    def start(self, js_factory: Callable[[], Awaitable[JetStreamContext]]) -> None:
        """Watch the bucket in the background (``js_factory()`` gives a JetStream context
        once NATS is connected). Rewatches from scratch after any error. A second call
        while the watch runs does nothing."""
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.create_task(self._run(js_factory), name="memberships-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait({task}, timeout=5)

    async def _run(self, js_factory: Callable[[], Awaitable[JetStreamContext]]) -> None:
        from nats.js.kv import KV_DEL, KV_PURGE

        while True:
            watcher = None
            try:
                js = await js_factory()
                kv = await bucket(js)
                watcher = await kv.watchall()
                initial: list[tuple[str, bytes | None, bool, datetime]] = []
                loading = True
                async for entry in watcher:
                    if entry is None:  # the initial values are all in
                        if loading:
                            self.replace(initial)
                            loading = False
                            self.loaded.set()
                        continue
                    deleted = entry.operation in (KV_DEL, KV_PURGE)
                    at = _as_datetime(entry.created)
                    if loading:
                        initial.append((entry.key, entry.value, deleted, at))
                        continue
                    self.apply(entry.key, entry.value, deleted, at)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("membership watch failed; rewatching", exc_info=True)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(watcher.stop(), 2)
            await asyncio.sleep(1.0)


def _as_datetime(value: object) -> datetime:
    """A bucket entry's time (nats-py gives a datetime, or nothing on old servers)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.now(UTC)


def at_least(role: str | None, needed: str) -> bool:
    """Whether ``role`` is ``needed`` or stronger (viewer < member < admin < owner)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)

"""Identity keeps the memberships bucket (``agentmesh.shared.memberships``) in step.

A durable consumer of identity's own ``identity.membership.*`` and
``identity.workspace.deleted`` events reads the membership's current state from the
database (a short read, closed before any network call) and writes it to the bucket. It
writes the current truth, not the event's content, so redeliveries and reordering are
harmless and no inbox is needed. At start-up, and then every
``IDENTITY_MEMBERSHIP_RESYNC_SECONDS``, the whole bucket is reconciled with the database,
which also covers memberships made by data migrations (they emit no events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsMessage, PullSub
from nats.js.api import DeliverPolicy
from sqlalchemy import select

from agentmesh.identity.workspaces.models import Membership, Workspace
from agentmesh.shared.events.envelope import Envelope
from agentmesh.shared.events.streams import stream_name
from agentmesh.shared.memberships import bucket, membership_key, put_role
from agentmesh.shared.runtime import ServiceRuntime

logger = logging.getLogger("agentmesh.identity.memberships")


async def current_roles(sessionmaker, workspace_id: uuid.UUID) -> dict[str, str]:
    """user id -> role of a live workspace's members (empty when it is deleted)."""
    async with sessionmaker() as session:
        rows = await session.execute(
            select(Membership.user_id, Membership.role)
            .join(Workspace, Workspace.id == Membership.workspace_id)
            .where(Membership.workspace_id == workspace_id, Workspace.deleted_at.is_(None))
        )
        return {str(user_id): role for user_id, role in rows.all()}


async def sync_event(runtime: ServiceRuntime, envelope: Envelope) -> None:
    """Bring the bucket in line with the database for the event's workspace (and user)."""
    assert runtime.broker is not None and runtime.sessionmaker is not None
    js = runtime.broker.config.connection_state.stream
    workspace_id = uuid.UUID(str(envelope.data["workspace_id"]))
    roles = await current_roles(runtime.sessionmaker, workspace_id)
    users = {str(envelope.data["user_id"])} if "user_id" in envelope.data else set()
    kv = await bucket(js)
    if envelope.type == "identity.workspace.deleted":
        prefix = f"{workspace_id}."
        with contextlib.suppress(Exception):  # no keys at all raises NoKeysError
            users |= {key[len(prefix) :] for key in await kv.keys() if key.startswith(prefix)}
    for user_id in users:
        await put_role(kv, workspace_id, user_id, roles.get(user_id))


async def reconcile(runtime: ServiceRuntime) -> int:
    """Make the bucket equal the database; returns how many keys it changed."""
    assert runtime.broker is not None and runtime.sessionmaker is not None
    js = runtime.broker.config.connection_state.stream
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            select(Membership.workspace_id, Membership.user_id, Membership.role)
            .join(Workspace, Workspace.id == Membership.workspace_id)
            .where(Workspace.deleted_at.is_(None))
        )
        wanted = {membership_key(w, u): role for w, u, role in rows.all()}
    # What the bucket holds, from identity's own watch of it (no read per key).
    present = runtime.memberships.current()
    kv = await bucket(js)
    changed = 0
    for key, role in wanted.items():
        if present.get(key) != role:
            await kv.put(key, role.encode())
            changed += 1
    for key in present.keys() - wanted.keys():
        await kv.delete(key)
        changed += 1
    return changed


def register(runtime: ServiceRuntime, *, resync_seconds: float) -> None:
    """The consumer, plus a start-up and periodic reconcile."""
    assert runtime.broker is not None
    durable = "identity-memberships-kv"
    for purpose, subject in (
        ("membership", "identity.membership.>"),
        ("workspace-deleted", "identity.workspace.deleted"),
    ):
        subscriber = runtime.broker.subscriber(
            subject,
            stream=JStream(name=stream_name("identity"), declare=False),
            durable=f"{durable}-{purpose}",
            config=ConsumerConfig(
                durable_name=f"{durable}-{purpose}",
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=30,
            ),
            pull_sub=PullSub(batch_size=16, timeout=1.0),
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_body,
            title=f"{durable}-{purpose}",
            description=f"identity mirrors {subject} into the memberships bucket",
        )

        async def consume(body: Any, msg: NatsMessage) -> None:
            try:
                await sync_event(runtime, Envelope.model_validate_json(body))
            except Exception:
                logger.warning("membership sync failed; redelivering", exc_info=True)
                await msg.nack(delay=1.0)
            else:
                await msg.ack()

        consume.__name__ = f"consume_identity_memberships_{purpose}".replace("-", "_")
        subscriber(consume)

    state: dict[str, asyncio.Task[None]] = {}

    async def loop() -> None:
        while True:
            try:
                if (
                    runtime.broker is not None
                    and runtime.memberships.ready
                    and await runtime.broker.ping(timeout=1.0)
                ):
                    changed = await reconcile(runtime)
                    if changed:
                        logger.info("memberships bucket reconciled", extra={"changed": changed})
                    await asyncio.sleep(resync_seconds)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("memberships reconcile failed", exc_info=True)
            await asyncio.sleep(1.0)

    async def start(_app: Any) -> None:
        state["task"] = asyncio.create_task(loop(), name="memberships-reconcile")

    async def stop(_app: Any) -> None:
        task = state.pop("task", None)
        if task is not None:
            task.cancel()
            # Bounded: a reconcile cancelled inside a query can take a while to unwind,
            # and shutdown must not wait on it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait({task}, timeout=5)

    runtime.startup_hooks.append(start)
    runtime.shutdown_hooks.append(stop)


async def _raw_body(msg: Any) -> bytes:
    return msg.body

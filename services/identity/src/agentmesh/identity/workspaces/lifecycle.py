"""The ends of workspaces and memberships: a member's account erased, a deleted
workspace's data purged by the other services."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.identity.users.models import User
from agentmesh.identity.workspaces import service
from agentmesh.identity.workspaces.errors import TransferOwnershipFirst
from agentmesh.identity.workspaces.models import Membership, Workspace
from agentmesh.shared.events.contracts import (
    AgentsWorkspacePurged,
    ChatWorkspacePurged,
    MembershipRemoved,
    personal_workspace,
)
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.identity.workspaces")


async def release_memberships(session: AsyncSession, outbox: Outbox, user: User) -> None:
    """Before an account is erased: leave every shared workspace. A workspace where the
    user is the only owner and which has other members blocks the erasure (409
    ``transfer-ownership-first``, naming them) until ownership moves; one without other
    members is deleted with them. Nothing changes unless nothing blocks."""
    rows = (
        await session.execute(
            select(Membership, Workspace)
            .join(Workspace, Workspace.id == Membership.workspace_id)
            .where(
                Membership.user_id == user.id,
                Workspace.personal.is_(False),
                Workspace.deleted_at.is_(None),
            )
            .order_by(Workspace.created_at, Workspace.id)
            .with_for_update(of=Workspace)
        )
    ).all()
    leave, delete, blocked = [], [], []
    for membership, workspace in rows:
        if membership.role != "owner":
            leave.append(membership)
            continue
        others = (
            await session.execute(
                select(
                    func.count(),
                    func.count().filter(Membership.role == "owner"),
                ).where(Membership.workspace_id == workspace.id, Membership.user_id != user.id)
            )
        ).one()
        if others[1]:
            leave.append(membership)
        elif others[0]:
            blocked.append(workspace)
        else:
            delete.append(workspace)
    if blocked:
        names = ", ".join(repr(w.name) for w in blocked)
        raise TransferOwnershipFirst(
            f"You are the only owner of {names}, which others belong to; transfer ownership "
            "to an admin there (or delete it) first.",
            extra={"workspaces": [{"id": str(w.id), "name": w.name} for w in blocked]},
        )
    for membership in leave:
        await session.delete(membership)
        await outbox.add(
            session, MembershipRemoved(workspace_id=membership.workspace_id, user_id=user.id)
        )
    for workspace in delete:
        await service.delete(session, outbox, workspace)
    await session.flush()


async def on_workspace_purged(
    session: AsyncSession, envelope: Envelope, payload: EventPayload
) -> None:
    """Record one service's part of a workspace's deletion; remove the workspace (its
    memberships and invitations with it) once agents and chat have both reported. The
    row lock makes exactly one of two concurrent reports remove it."""
    assert isinstance(payload, AgentsWorkspacePurged | ChatWorkspacePurged)
    workspace = await session.get(Workspace, payload.workspace_id, with_for_update=True)
    if workspace is None or workspace.deleted_at is None:
        logger.warning(
            "purge report for a workspace not being deleted",
            extra={"workspace_id": str(payload.workspace_id), "subject": envelope.type},
        )
        return
    now = datetime.now(UTC)
    if isinstance(payload, AgentsWorkspacePurged):
        workspace.agents_purged_at = workspace.agents_purged_at or now
    else:
        workspace.chat_purged_at = workspace.chat_purged_at or now
    if workspace.agents_purged_at and workspace.chat_purged_at:
        await session.delete(workspace)
        logger.info("workspace removed", extra={"workspace_id": str(workspace.id)})
    await session.flush()


async def remove_personal(session: AsyncSession, user_id) -> None:
    """The erased account's personal workspace (its data went with the user's)."""
    workspace = await session.get(Workspace, personal_workspace(user_id))
    if workspace is not None and workspace.personal:
        await session.delete(workspace)

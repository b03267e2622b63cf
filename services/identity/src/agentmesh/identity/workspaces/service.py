"""Workspace use cases: create, list, rename, delete; members; ownership transfer.

Every read and write checks the caller's membership: a workspace the caller is not a
member of is a 404 (never a 403 that would confirm it exists); a member whose role is too
weak gets a 403. A platform admin acts as an owner everywhere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.identity.users.models import User
from agentmesh.identity.workspaces.errors import LastOwner, PersonalWorkspace, WorkspaceNotFound
from agentmesh.identity.workspaces.models import Membership, Workspace
from agentmesh.shared.errors import Forbidden, NotFound
from agentmesh.shared.events.contracts import (
    MembershipAdded,
    MembershipChanged,
    MembershipRemoved,
    WorkspaceCreated,
    WorkspaceDeleted,
    WorkspaceUpdated,
    personal_workspace,
)
from agentmesh.shared.events.outbox import Outbox
from agentmesh.shared.memberships import at_least


@dataclass(frozen=True)
class Access:
    """A caller's standing in one live workspace."""

    workspace: Workspace
    role: str


async def create(
    session: AsyncSession, outbox: Outbox, user: User, name: str, *, personal: bool = False
) -> Workspace:
    """A new workspace with ``user`` as its owner (and the events that say so). A personal
    workspace takes its owner's id (``contracts.personal_workspace``): other services map
    data and version 1 events without a ``workspace_id`` to it without asking identity."""
    workspace = Workspace(name=name, personal=personal, created_by=user.id)
    if personal:
        workspace.id = personal_workspace(user.id)
    session.add(workspace)
    await session.flush()
    session.add(
        Membership(workspace_id=workspace.id, user_id=user.id, role="owner", personal=personal)
    )
    await session.flush()
    await session.refresh(workspace)
    await outbox.add(
        session,
        WorkspaceCreated(workspace_id=workspace.id, name=name, personal=personal, owner_id=user.id),
    )
    await outbox.add(
        session, MembershipAdded(workspace_id=workspace.id, user_id=user.id, role="owner")
    )
    return workspace


async def create_personal(session: AsyncSession, outbox: Outbox, user: User) -> Workspace:
    """The personal workspace every account gets at registration."""
    workspace = await create(
        session, outbox, user, f"{user.name or user.email}'s workspace", personal=True
    )
    user.last_workspace_id = workspace.id
    return workspace


async def personal_of(session: AsyncSession, user_id: uuid.UUID) -> Workspace:
    workspace = await session.scalar(
        select(Workspace)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user_id, Membership.personal, Workspace.deleted_at.is_(None))
    )
    if workspace is None:  # every account has one; only a broken row gets here
        raise WorkspaceNotFound("The account has no personal workspace.")
    return workspace


async def role_of(session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    """The user's role in a live workspace, or None."""
    return await session.scalar(
        select(Membership.role)
        .join(Workspace, Workspace.id == Membership.workspace_id)
        .where(
            Membership.workspace_id == workspace_id,
            Membership.user_id == user_id,
            Workspace.deleted_at.is_(None),
        )
    )


async def access(
    session: AsyncSession, user: User, workspace_id: uuid.UUID, needed: str = "viewer"
) -> Access:
    """The caller's access to a workspace: 404 unless a member, 403 if the role is weaker
    than ``needed``. A platform admin acts as an owner."""
    workspace = await session.get(Workspace, workspace_id)
    if workspace is None or workspace.deleted_at is not None:
        raise WorkspaceNotFound("No such workspace.")
    role = await role_of(session, workspace_id, user.id)
    if role is None and user.is_admin:
        role = "owner"
    if role is None:
        raise WorkspaceNotFound("No such workspace.")
    if not at_least(role, needed):
        raise Forbidden(f"This needs the {needed} role in the workspace; you are {role}.")
    return Access(workspace, role)


async def list_for(session: AsyncSession, user_id: uuid.UUID) -> list[tuple[Workspace, str]]:
    """The user's live workspaces with their role, personal first, then by creation."""
    rows = await session.execute(
        select(Workspace, Membership.role)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user_id, Workspace.deleted_at.is_(None))
        .order_by(Workspace.personal.desc(), Workspace.created_at, Workspace.id)
    )
    return [(workspace, role) for workspace, role in rows.all()]


async def rename(session: AsyncSession, outbox: Outbox, workspace: Workspace, name: str) -> None:
    workspace.name = name
    await session.flush()
    await outbox.add(session, WorkspaceUpdated(workspace_id=workspace.id, name=name))


async def delete(session: AsyncSession, outbox: Outbox, workspace: Workspace) -> None:
    """Start deleting a workspace: it disappears from every API at once, and each service
    deletes its data when ``identity.workspace.deleted`` reaches it."""
    if workspace.personal:
        raise PersonalWorkspace("A personal workspace cannot be deleted.")
    if workspace.deleted_at is not None:
        return
    now = datetime.now(UTC)
    workspace.deleted_at = now
    await session.execute(
        update(User).where(User.last_workspace_id == workspace.id).values(last_workspace_id=None)
    )
    await session.flush()
    await outbox.add(session, WorkspaceDeleted(workspace_id=workspace.id, requested_at=now))


# ------------------------------------------------------------------ members


async def members(session: AsyncSession, workspace_id: uuid.UUID) -> list[tuple[Membership, User]]:
    rows = await session.execute(
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.workspace_id == workspace_id)
        .order_by(Membership.joined_at, User.id)
    )
    return [(membership, user) for membership, user in rows.all()]


async def _membership(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> Membership:
    membership = await session.get(Membership, (workspace_id, user_id), with_for_update=True)
    if membership is None:
        raise NotFound("No such member.")
    return membership


async def add_member(
    session: AsyncSession, outbox: Outbox, workspace: Workspace, user_id: uuid.UUID, role: str
) -> Membership:
    """Add ``user_id`` with ``role``; an existing member keeps the stronger of the two."""
    if workspace.personal:
        raise PersonalWorkspace("A personal workspace cannot be shared.")
    existing = await session.get(Membership, (workspace.id, user_id), with_for_update=True)
    if existing is not None:
        if not at_least(existing.role, role):
            existing.role = role
            await session.flush()
            await outbox.add(
                session, MembershipChanged(workspace_id=workspace.id, user_id=user_id, role=role)
            )
        return existing
    membership = Membership(workspace_id=workspace.id, user_id=user_id, role=role)
    session.add(membership)
    await session.flush()
    await session.refresh(membership)
    await outbox.add(
        session, MembershipAdded(workspace_id=workspace.id, user_id=user_id, role=role)
    )
    return membership


async def change_role(
    session: AsyncSession, outbox: Outbox, acting: Access, user_id: uuid.UUID, role: str
) -> Membership:
    """Admins change viewers and members; only the owner makes or unmakes admins. The
    owner's own role changes only by transfer."""
    membership = await _membership(session, acting.workspace.id, user_id)
    if membership.role == "owner":
        raise Forbidden("The owner's role changes only by transferring ownership.")
    if acting.role != "owner" and "admin" in (membership.role, role):
        raise Forbidden("Only the owner makes or unmakes admins.")
    if membership.role != role:
        membership.role = role
        await session.flush()
        await outbox.add(
            session, MembershipChanged(workspace_id=acting.workspace.id, user_id=user_id, role=role)
        )
    return membership


async def remove_member(
    session: AsyncSession, outbox: Outbox, workspace: Workspace, caller: User, user_id: uuid.UUID
) -> None:
    """Remove a member, or leave (``user_id`` is the caller). Admins remove viewers and
    members, the owner anyone but themselves; the last owner can neither leave nor be
    removed."""
    if workspace.personal:
        raise PersonalWorkspace("Nobody leaves a personal workspace.")
    membership = await _membership(session, workspace.id, user_id)
    if user_id != caller.id:
        acting = await access(session, caller, workspace.id, "admin")
        if membership.role == "owner" or (membership.role == "admin" and acting.role != "owner"):
            raise Forbidden("Only the owner removes admins, and the owner can't be removed.")
    if membership.role == "owner":
        owners = await session.scalar(
            select(func.count()).where(
                Membership.workspace_id == workspace.id, Membership.role == "owner"
            )
        )
        if (owners or 0) <= 1:
            raise LastOwner("The last owner cannot leave; transfer ownership first.")
    await session.delete(membership)
    await session.execute(
        update(User)
        .where(User.id == user_id, User.last_workspace_id == workspace.id)
        .values(last_workspace_id=None)
    )
    await session.flush()
    await outbox.add(session, MembershipRemoved(workspace_id=workspace.id, user_id=user_id))


async def transfer(
    session: AsyncSession, outbox: Outbox, acting: Access, caller: User, user_id: uuid.UUID
) -> None:
    """The owner hands ownership to an admin and becomes an admin."""
    if acting.workspace.personal:
        raise PersonalWorkspace("A personal workspace cannot change hands.")
    if acting.role != "owner":
        raise Forbidden("Only the owner transfers ownership.")
    target = await _membership(session, acting.workspace.id, user_id)
    if target.role != "admin":
        raise Forbidden("Ownership goes to an admin of the workspace; make them admin first.")
    target.role = "owner"
    previous = await session.get(Membership, (acting.workspace.id, caller.id), with_for_update=True)
    events = [MembershipChanged(workspace_id=acting.workspace.id, user_id=user_id, role="owner")]
    if previous is not None and previous.role == "owner":
        previous.role = "admin"
        events.append(
            MembershipChanged(workspace_id=acting.workspace.id, user_id=caller.id, role="admin")
        )
    await session.flush()
    for event in events:
        await outbox.add(session, event)

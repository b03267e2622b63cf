"""Invitations: an admin invites an email with a role; that account accepts.

The token is shown once (for a link in an email; no mail is sent) and kept as a hash. An
invitation for another email, an expired, used or revoked one, is a 404 to whoever tries.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.identity.crypto import hash_token
from agentmesh.identity.users.models import User
from agentmesh.identity.users.schemas import email_key
from agentmesh.identity.workspaces import service
from agentmesh.identity.workspaces.errors import InvitationNotFound, PersonalWorkspace
from agentmesh.identity.workspaces.models import Invitation, Membership, Workspace
from agentmesh.shared.errors import Forbidden
from agentmesh.shared.events.outbox import Outbox


async def invite(
    session: AsyncSession,
    acting: service.Access,
    caller: User,
    *,
    email: str,
    role: str,
    ttl_seconds: int,
) -> tuple[Invitation, str]:
    if acting.workspace.personal:
        raise PersonalWorkspace("A personal workspace cannot be shared.")
    if role == "admin" and acting.role != "owner":
        raise Forbidden("Only the owner makes admins.")
    token = f"inv_{secrets.token_urlsafe(32)}"
    invitation = Invitation(
        workspace_id=acting.workspace.id,
        email=email,
        role=role,
        token_hash=hash_token(token),
        invited_by=caller.id,
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl_seconds),
    )
    session.add(invitation)
    await session.flush()
    await session.refresh(invitation)
    return invitation, token


def _pending():
    return (
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > datetime.now(UTC),
        Workspace.deleted_at.is_(None),
    )


async def pending_of_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> list[Invitation]:
    return list(
        await session.scalars(
            select(Invitation)
            .join(Workspace, Workspace.id == Invitation.workspace_id)
            .where(Invitation.workspace_id == workspace_id, *_pending())
            .order_by(Invitation.created_at.desc(), Invitation.id)
        )
    )


async def pending_for(session: AsyncSession, user: User) -> list[Invitation]:
    """Invitations waiting for the caller's account email."""
    return list(
        await session.scalars(
            select(Invitation)
            .join(Workspace, Workspace.id == Invitation.workspace_id)
            # Emails match whatever their case (the local part's too).
            .where(func.lower(Invitation.email) == func.lower(user.email), *_pending())
            .order_by(Invitation.created_at.desc(), Invitation.id)
        )
    )


async def revoke(session: AsyncSession, workspace_id: uuid.UUID, invitation_id: uuid.UUID) -> None:
    invitation = await session.get(Invitation, invitation_id, with_for_update=True)
    if (
        invitation is None
        or invitation.workspace_id != workspace_id
        or invitation.accepted_at is not None
        or invitation.revoked_at is not None
    ):
        raise InvitationNotFound("No such invitation.")
    invitation.revoked_at = datetime.now(UTC)


async def accept(
    session: AsyncSession,
    outbox: Outbox,
    user: User,
    *,
    invitation_id: uuid.UUID | None = None,
    token: str | None = None,
) -> tuple[Workspace, Membership]:
    """Join the invitation's workspace. Exactly one accept of an invitation succeeds."""
    statement = select(Invitation).join(Workspace, Workspace.id == Invitation.workspace_id)
    if invitation_id is not None:
        statement = statement.where(Invitation.id == invitation_id)
    else:
        statement = statement.where(Invitation.token_hash == hash_token(token or ""))
    invitation = await session.scalar(statement.where(*_pending()).with_for_update(of=Invitation))
    if invitation is None or email_key(invitation.email) != user.email_key:
        raise InvitationNotFound("No such invitation for this account.")
    invitation.accepted_at = datetime.now(UTC)
    workspace = await session.get(Workspace, invitation.workspace_id)
    assert workspace is not None
    membership = await service.add_member(session, outbox, workspace, user.id, invitation.role)
    return workspace, membership

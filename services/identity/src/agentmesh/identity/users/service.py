"""Profile and administration use cases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, any_, delete, func, select, update

from agentmesh.identity.api_keys.models import ApiKey
from agentmesh.identity.auth.models import LoginFailure
from agentmesh.identity.auth.passwords import check_password_policy
from agentmesh.identity.auth.service import AuthService
from agentmesh.identity.erasure.models import Erasure
from agentmesh.identity.errors import InvalidCredentials
from agentmesh.identity.users.models import User
from agentmesh.identity.users.schemas import AdminUserUpdate, ProfileUpdate
from agentmesh.identity.workspaces.lifecycle import release_memberships
from agentmesh.shared.errors import AppError, NotFound
from agentmesh.shared.events.contracts import UserDeactivated, UserDeleted, UserUpdated

SORTS: dict[str, ColumnElement[Any]] = {
    "created_at": User.created_at.asc(),
    "-created_at": User.created_at.desc(),
    "email": User.email.asc(),
    "-email": User.email.desc(),
}


def _updated(user: User) -> UserUpdated:
    return UserUpdated(
        user_id=user.id,
        email=user.email,
        name=user.name,
        roles=user.roles,
        is_active=user.is_active,
    )


async def update_profile(
    auth: AuthService, session, user: User, body: ProfileUpdate, *, current_family: str | None
) -> User:
    """Rename, or change the password (which ends every other session)."""
    if body.password is not None:
        if body.current_password is None or not await auth.passwords.verify(
            user.password_hash, body.current_password
        ):
            raise InvalidCredentials("The current password is wrong.")
        check_password_policy(body.password, email=user.email)
        user.password_hash = await auth.passwords.hash(body.password)
        keep = uuid.UUID(current_family) if current_family else None
        await auth.revoke_families(session, user.id, reason="password changed", keep=keep)
    if body.name is not None:
        user.name = body.name.strip()
    await session.flush()
    await session.refresh(user)
    await auth.outbox.add(session, _updated(user))
    return user


async def list_users(
    session, *, email: str | None, role: str | None, sort: str, limit: int, offset: int
) -> tuple[list[User], int]:
    query = select(User)
    if email:
        query = query.where(User.email.ilike(f"%{email.strip()}%"))
    if role:
        query = query.where(any_(User.roles) == role)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    users = await session.scalars(query.order_by(SORTS[sort], User.id).limit(limit).offset(offset))
    return list(users), int(total or 0)


async def get_user(session, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def deactivate(auth: AuthService, session, user: User, *, reason: str) -> None:
    """Stop a user at once: no login, no refresh, every session revoked."""
    if not user.is_active:
        return
    user.is_active = False
    user.deactivated_at = datetime.now(UTC)
    await auth.revoke_families(session, user.id, reason=reason)
    await session.flush()
    await session.refresh(user)
    await auth.outbox.add(session, UserDeactivated(user_id=user.id, reason=reason))


async def admin_update(auth: AuthService, session, user: User, body: AdminUserUpdate) -> User:
    if body.role is not None:
        user.roles = ["admin", "user"] if body.role == "admin" else ["user"]
    if body.active is False:
        await deactivate(auth, session, user, reason="admin")
    elif body.active is True and not user.is_active:
        user.is_active = True
        user.deactivated_at = None
    await session.flush()
    await session.refresh(user)
    await auth.outbox.add(session, _updated(user))
    return user


async def start_erasure(auth: AuthService, session, user: User) -> Erasure:
    """Step 1 of the erasure saga: deactivate now, emit ``identity.user.deleted``.
    The account row goes once agents and chat report their part done."""
    existing = await session.get(Erasure, user.id)
    if existing is not None:
        raise AppError(
            "Erasure is already in progress.",
            status=409,
            type="erasure-pending",
            title="Erasure pending",
        )
    await release_memberships(session, auth.outbox, user)
    await deactivate(auth, session, user, reason="erasure")
    await session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    # Failed logins name the email (and the addresses it was tried from): gone with it.
    # Recorded under the case-folded email (rows older than that under the email itself).
    await session.execute(
        delete(LoginFailure).where(LoginFailure.email.in_({user.email, user.email_key}))
    )
    erasure = Erasure(user_id=user.id, email_hash=auth.emails.hash(user.email))
    session.add(erasure)
    await session.flush()
    await auth.outbox.add(session, UserDeleted(user_id=user.id, requested_at=datetime.now(UTC)))
    return erasure

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status

from agentmesh.identity.deps import AdminCaller, Auth, CurrentProfile, SessionCaller
from agentmesh.identity.erasure.models import Erasure
from agentmesh.identity.oidc import linked
from agentmesh.identity.users import service
from agentmesh.identity.users.schemas import (
    AdminUserUpdate,
    ErasureOut,
    LinkedIdentity,
    MeOut,
    ProfileUpdate,
    UserOut,
    UserPage,
)
from agentmesh.shared.db import Session
from agentmesh.shared.errors import NotFound

router = APIRouter(prefix="/api/v1/users", tags=["users"])
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated"},
    403: {"description": "Admin only"},
}


@router.get("/me", response_model=MeOut, responses={401: {"description": "Not authenticated"}})
async def me(caller: CurrentProfile) -> MeOut:
    """The caller's own profile, with the OpenID Connect identities linked to it."""
    user = caller.profile.user
    return MeOut(
        **UserOut.of(user).model_dump(),
        identities=[
            LinkedIdentity(provider=i.provider, email=i.identity_email, linked_at=i.linked_at)
            for i in caller.profile.identities
        ],
        has_password=user.has_password,
    )


@router.delete(
    "/me/identities/{provider}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        404: {"description": "No identity of that provider is linked"},
        409: {"description": "It is the only way left to sign in"},
    },
)
async def unlink_identity(provider: str, caller: SessionCaller, session: Session) -> None:
    """Unlink a provider's account, unless it is your only way left to sign in."""
    await linked.unlink(session, caller.user, provider)


@router.patch("/me", response_model=UserOut)
async def update_me(
    body: ProfileUpdate, caller: SessionCaller, auth: Auth, session: Session
) -> UserOut:
    """Rename, or change the password with ``current_password``; a password change ends
    every other session."""
    user = await service.update_profile(
        auth,
        session,
        caller.user,
        body,
        current_family=caller.claims.get("sid"),
    )
    return UserOut.of(user)


@router.delete(
    "/me",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ErasureOut,
    responses={
        409: {
            "description": "An erasure is already pending (`erasure-pending`), or the user is "
            "the only owner of a workspace others belong to (`transfer-ownership-first`, "
            "with `workspaces: [{id, name}]`)"
        }
    },
)
async def delete_me(caller: SessionCaller, auth: Auth, session: Session) -> ErasureOut:
    """Erase the account: it is deactivated at once and removed once every service has
    deleted the user's data. It leaves every shared workspace first; a workspace where the
    user is the only owner is deleted with them when nobody else belongs to it, and blocks
    the erasure (409) while others do."""
    erasure = await service.start_erasure(auth, session, caller.user)
    return ErasureOut.model_validate(erasure, from_attributes=True)


@router.get("", response_model=UserPage, responses=ADMIN_ONLY)
async def list_users(
    _: AdminCaller,
    session: Session,
    email: Annotated[str | None, Query(max_length=320, description="Substring match")] = None,
    role: Literal["user", "admin"] | None = None,
    sort: Literal["created_at", "-created_at", "email", "-email"] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> UserPage:
    """Admin: list users, filtered by email and role, sorted, paginated."""
    users, total = await service.list_users(
        session, email=email, role=role, sort=sort, limit=limit, offset=offset
    )
    return UserPage(items=[UserOut.of(u) for u in users], total=total, limit=limit, offset=offset)


@router.patch("/{user_id}", response_model=UserOut, responses=ADMIN_ONLY)
async def update_user(
    user_id: uuid.UUID, body: AdminUserUpdate, _: AdminCaller, auth: Auth, session: Session
) -> UserOut:
    """Admin: change a user's role or active flag."""
    user = await service.get_user(session, user_id)
    return UserOut.of(await service.admin_update(auth, session, user, body))


@router.post("/{user_id}/deactivate", response_model=UserOut, responses=ADMIN_ONLY)
async def deactivate_user(
    user_id: uuid.UUID, _: AdminCaller, auth: Auth, session: Session
) -> UserOut:
    """Admin: deactivate a user; they can no longer log in or refresh."""
    user = await service.get_user(session, user_id)
    await service.deactivate(auth, session, user, reason="admin")
    return UserOut.of(user)


@router.get("/{user_id}/erasure", response_model=ErasureOut, responses=ADMIN_ONLY)
async def erasure_state(user_id: uuid.UUID, _: AdminCaller, session: Session) -> ErasureOut:
    """Admin: where a user's erasure stands (kept after the account is gone)."""
    erasure = await session.get(Erasure, user_id)
    if erasure is None:
        raise NotFound("No erasure for this user.")
    return ErasureOut.model_validate(erasure, from_attributes=True)

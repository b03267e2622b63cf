"""Sessions a user can see and end: ``GET /auth/sessions``, ``DELETE /auth/sessions/{id}``.

Ending one revokes its refresh-token family and emits ``identity.session.revoked``; the
deny list (``agentmesh.identity.denylist``) then refuses its access tokens everywhere."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlalchemy import exists, func, select

from agentmesh.identity.auth.models import RefreshToken, RefreshTokenFamily
from agentmesh.identity.deps import Auth, SessionCaller
from agentmesh.shared.db import Session
from agentmesh.shared.errors import NotFound

router = APIRouter(prefix="/api/v1/auth/sessions", tags=["auth"])


class SessionNotFound(NotFound):
    type, title = "session-not-found", "No such session"


class SessionOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool = Field(description="The session of the token making this request")
    method: str = Field(description='"password" or "oidc:<provider>"')


@router.get("", response_model=list[SessionOut], responses={401: {"description": "Not signed in"}})
async def list_sessions(caller: SessionCaller, session: Session) -> list[SessionOut]:
    """Your live login sessions (not ended, with a refresh token still valid), newest
    first."""
    live_token = exists().where(
        RefreshToken.family_id == RefreshTokenFamily.id,
        RefreshToken.rotated_at.is_(None),
        RefreshToken.expires_at > func.now(),
    )
    families = await session.scalars(
        select(RefreshTokenFamily)
        .where(
            RefreshTokenFamily.user_id == caller.user.id,
            RefreshTokenFamily.revoked_at.is_(None),
            live_token,
        )
        .order_by(RefreshTokenFamily.created_at.desc(), RefreshTokenFamily.id)
    )
    current = caller.claims.get("sid")
    return [
        SessionOut(
            id=f.id,
            created_at=f.created_at,
            last_used_at=f.last_used_at,
            user_agent=f.user_agent,
            ip=f.ip,
            current=str(f.id) == current,
            method=f.method,
        )
        for f in families
    ]


@router.delete(
    "/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such live session of yours"}},
)
async def end_session(
    session_id: uuid.UUID, caller: SessionCaller, session: Session, auth: Auth
) -> None:
    """End one of your sessions: its refresh tokens stop working at once and its access
    tokens are refused everywhere within seconds."""
    family = await session.scalar(
        select(RefreshTokenFamily.id).where(
            RefreshTokenFamily.id == session_id,
            RefreshTokenFamily.user_id == caller.user.id,
            RefreshTokenFamily.revoked_at.is_(None),
        )
    )
    if family is None:
        raise SessionNotFound("No such session.")
    await auth.revoke_families(session, caller.user.id, reason="ended by user", only=session_id)

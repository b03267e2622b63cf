"""Identity's own request dependencies: who is calling, and may they."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentmesh.identity.crypto import same_secret
from agentmesh.identity.users.models import User
from agentmesh.shared.auth import Principal, note_principal
from agentmesh.shared.db import Session
from agentmesh.shared.errors import Forbidden, Unauthorized

bearer = HTTPBearer(auto_error=False, description="An AgentMesh access token")


@dataclass(frozen=True)
class Caller:
    principal: Principal
    user: User
    claims: dict[str, Any]


async def current_caller(
    request: Request,
    session: Session,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    if credentials is None:
        raise Unauthorized("missing bearer token")
    principal, claims = await request.app.state.tokens.verify(session, credentials.credentials)
    note_principal(request, principal.user_id, principal.api_key_id)
    user = await session.get(User, principal.user_id)
    assert user is not None
    return Caller(principal=principal, user=user, claims=claims)


async def session_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    """A caller signed in with a password session, not with an API key.

    Account management (API keys, profile changes, erasure, logout) needs a session: a
    key, whatever its scopes, must not mint keys, change the password or delete the
    account it belongs to."""
    if "akid" in caller.claims:
        raise Forbidden("This action needs a signed-in session; API keys cannot do it.")
    return caller


async def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if "admin" not in caller.principal.roles or not caller.user.is_admin:
        raise Forbidden("admin role required")
    return caller


async def internal_service(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Only platform services (the gateway) hold the internal token."""
    expected = request.app.state.settings.internal_token.get_secret_value()
    if not expected or credentials is None or not same_secret(credentials.credentials, expected):
        raise Unauthorized("service credential required")


CurrentCaller = Annotated[Caller, Depends(current_caller)]
SessionCaller = Annotated[Caller, Depends(session_caller)]
AdminCaller = Annotated[Caller, Depends(admin_caller)]
InternalService = Annotated[None, Depends(internal_service)]

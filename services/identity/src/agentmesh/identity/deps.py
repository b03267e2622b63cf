"""Identity's own request dependencies: who is calling, and may they; and the services
of the app its routes take by type (``shared.deps``) instead of reading
``request.app.state``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentmesh.identity.auth.service import AuthService
from agentmesh.identity.auth.tokens import Claims, TokenIssuer, refuse_unless_live
from agentmesh.identity.crypto import same_secret
from agentmesh.identity.keys.service import SigningKeyStore
from agentmesh.identity.oidc.service import OidcService
from agentmesh.identity.settings import IdentitySettings
from agentmesh.identity.users import repository as users
from agentmesh.identity.users.models import User
from agentmesh.shared.auth import Principal, note_principal
from agentmesh.shared.db import ReadConnection, Session
from agentmesh.shared.deps import from_state
from agentmesh.shared.errors import Forbidden, Unauthorized
from agentmesh.shared.events.outbox import Outbox

bearer = HTTPBearer(auto_error=False, description="An AgentMesh access token")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def bearer_token(credentials: Bearer) -> str:
    """The request's bearer token, or ``Unauthorized``: asked for before any connection is
    taken, so a request without one never holds one."""
    if credentials is None:
        raise Unauthorized("missing bearer token")
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]

#: Sign-up, login, sessions, API keys, erasure: identity's use cases.
Auth = Annotated[AuthService, from_state("auth")]
#: Signs and verifies access tokens.
Tokens = Annotated[TokenIssuer, from_state("tokens")]
#: The signing keys and the JWKS.
Keys = Annotated[SigningKeyStore, from_state("keys")]
#: OpenID Connect logins.
Oidc = Annotated[OidcService, from_state("oidc")]
Settings = Annotated[IdentitySettings, from_state("settings")]


async def _outbox(auth: Auth) -> Outbox:
    return auth.outbox


#: The outbox identity's events are written to, in the request's transaction.
Events = Annotated[Outbox, Depends(_outbox)]


@dataclass(frozen=True)
class Caller:
    principal: Principal
    user: User
    claims: Claims


async def current_caller(
    request: Request, token: BearerToken, session: Session, tokens: Tokens
) -> Caller:
    principal, claims = await tokens.verify(session, token)
    note_principal(request, principal.user_id, principal.api_key_id)
    user = await session.get(User, principal.user_id)
    assert user is not None
    return Caller(principal=principal, user=user, claims=claims)


@dataclass(frozen=True)
class ProfileCaller:
    principal: Principal
    profile: users.Profile


async def profile_caller(
    request: Request, token: BearerToken, reader: ReadConnection, tokens: Tokens
) -> ProfileCaller:
    """``current_caller`` for reading one's own profile: the token verified (cached), then
    the user, the revocation of the token's session and the linked identities in one
    statement on the autocommit connection, refused as ``current_caller`` refuses."""
    principal, claims = await tokens.decode(reader, token)
    sid = claims.get("sid")
    found = await users.profile(reader, principal.user_id, uuid.UUID(sid) if sid else None)
    refuse_unless_live(
        active=found is not None and found.user.is_active,
        revoked_at=None if found is None else found.session_revoked_at,
    )
    assert found is not None
    note_principal(request, principal.user_id, principal.api_key_id)
    return ProfileCaller(principal=principal, profile=found)


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


async def internal_service(settings: Settings, credentials: Bearer) -> None:
    """Only platform services (the gateway) hold the internal token."""
    expected = settings.internal_token.get_secret_value()
    if not expected or credentials is None or not same_secret(credentials.credentials, expected):
        raise Unauthorized("service credential required")


CurrentCaller = Annotated[Caller, Depends(current_caller)]
SessionCaller = Annotated[Caller, Depends(session_caller)]
AdminCaller = Annotated[Caller, Depends(admin_caller)]
#: The caller with their own profile, for ``GET /users/me`` (read-only, one statement).
CurrentProfile = Annotated[ProfileCaller, Depends(profile_caller)]
InternalService = Annotated[None, Depends(internal_service)]

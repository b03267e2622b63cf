from __future__ import annotations

import ipaddress
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from agentmesh.identity.auth.schemas import LoginRequest, RefreshRequest, RegisterRequest, TokenPair
from agentmesh.identity.deps import Auth, SessionCaller
from agentmesh.identity.users.schemas import UserOut
from agentmesh.identity.workspaces.schemas import SwitchRequest
from agentmesh.shared.db import Session
from agentmesh.shared.errors import AppError

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Invalid credentials or token"},
    429: {"description": "Too many failed logins; see Retry-After"},
}


def client_ip(request: Request) -> str:
    """The address login failures are counted against: IPv6 by its /64, which one
    client usually holds whole (a fresh address per guess must not reset the count)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses={409: {"description": "Email already registered"}},
)
async def register(body: RegisterRequest, session: Session, auth: Auth) -> UserOut:
    """Create an account. The email is normalized; the password must be 12 to 256
    characters and not one of the most common passwords."""
    user = await auth.register(session, email=body.email, password=body.password, name=body.name)
    return UserOut.of(user)


@router.post("/login", response_model=TokenPair, responses=PROBLEMS)
async def login(
    body: LoginRequest, request: Request, response: Response, session: Session, auth: Auth
) -> TokenPair:
    """Exchange email and password for an access token and a refresh token."""
    response.headers["Cache-Control"] = "no-store"
    return await auth.login(
        session,
        email=body.email,
        password=body.password,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


@router.post("/token", response_model=TokenPair, responses=PROBLEMS)
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    response: Response,
    session: Session,
    auth: Auth,
) -> TokenPair:
    """OAuth2 password flow (form fields ``username`` = email and ``password``), so
    Swagger's Authorize button works."""
    response.headers["Cache-Control"] = "no-store"
    return await auth.login(
        session,
        email=form.username,
        password=form.password,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


@router.post("/refresh", response_model=TokenPair, responses=PROBLEMS)
async def refresh(body: RefreshRequest, response: Response, session: Session, auth: Auth):
    """Rotate a refresh token for a new pair. Reusing a rotated token ends the session."""
    response.headers["Cache-Control"] = "no-store"
    return await auth.refresh(session, body.refresh_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=PROBLEMS)
async def logout(caller: SessionCaller, session: Session, auth: Auth) -> None:
    """End the current session (its refresh-token family)."""
    family = caller.claims.get("sid")
    if family is None:
        raise AppError(
            "This token is not tied to a login session.",
            status=400,
            type="no-session",
            title="No session",
        )
    await auth.revoke_families(session, caller.user.id, reason="logout", only=uuid.UUID(family))


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT, responses=PROBLEMS)
async def logout_all(caller: SessionCaller, session: Session, auth: Auth) -> None:
    """End every session of the caller."""
    await auth.revoke_families(session, caller.user.id, reason="logout-all")


@router.post(
    "/switch",
    response_model=TokenPair,
    responses={**PROBLEMS, 404: {"description": "Not a member of that workspace"}},
)
async def switch(
    body: SwitchRequest, caller: SessionCaller, response: Response, session: Session, auth: Auth
) -> TokenPair:
    """A new token pair bound to another of your workspaces, in the same login session.
    Later logins and refreshes are bound to it too, while you are a member."""
    response.headers["Cache-Control"] = "no-store"
    family = caller.claims.get("sid")
    if family is None:
        raise AppError(
            "This token is not tied to a login session.",
            status=400,
            type="no-session",
            title="No session",
        )
    return await auth.switch(session, caller.user, uuid.UUID(family), body.workspace_id)

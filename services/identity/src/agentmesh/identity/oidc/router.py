"""``/api/v1/auth/oidc``: sign in with an OpenID Connect provider (public routes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from agentmesh.identity.auth.router import client_ip
from agentmesh.identity.auth.schemas import TokenPair
from agentmesh.identity.deps import Oidc, Settings
from agentmesh.identity.oidc.service import COOKIE, COOKIE_PATH
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.db import Session
from agentmesh.shared.errors import AppError

router = APIRouter(prefix="/api/v1/auth/oidc", tags=["auth"])


class ProviderOut(BaseModel):
    name: str
    display_name: str


class LoginCodeRequest(BaseModel):
    login_code: str = Field(min_length=1, max_length=128)


def public_base(request: Request, settings: IdentitySettings) -> str:
    """The platform's public base URL: ``AGENTMESH_PUBLIC_URL``, else the scheme and host
    the gateway saw (``X-Forwarded-Proto``, ``X-Forwarded-Host``)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    proto = (request.headers.get("x-forwarded-proto") or request.url.scheme).split(",")[0]
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
    host = host.split(",")[0].strip()
    proto = proto.strip().lower()
    if proto not in ("http", "https") or not host or any(c in host for c in "/\\@?# "):
        raise AppError(
            "Cannot tell this service's public URL; set AGENTMESH_PUBLIC_URL.",
            status=400,
            type="public-url-unknown",
            title="Public URL unknown",
        )
    return f"{proto}://{host}"


@router.get("/providers", response_model=list[ProviderOut])
async def providers(settings: Settings) -> list[ProviderOut]:
    """The configured sign-in providers, for a login page."""
    configured = settings.oidc_providers.providers
    return [ProviderOut(name=n, display_name=p.display_name) for n, p in configured.items()]


@router.get(
    "/{name}/authorize",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses={
        302: {"description": "To the provider's sign-in page"},
        400: {"description": "return_to is not allowed"},
        404: {"description": "No such provider"},
        502: {"description": "The provider cannot be reached"},
    },
)
async def authorize(
    name: str,
    request: Request,
    session: Session,
    oidc: Oidc,
    return_to: Annotated[str | None, Query(max_length=2048)] = None,
) -> RedirectResponse:
    """Start signing in: redirects to the provider (authorization code flow, PKCE S256).
    ``return_to``, one of ``IDENTITY_OIDC_RETURN_URLS``, receives a one-time
    ``login_code`` instead of the tokens."""
    base = public_base(request, oidc.settings)
    started = await oidc.start(session, name, base_url=base, return_to=return_to)
    response = RedirectResponse(started.url, status_code=status.HTTP_302_FOUND)
    response.set_cookie(
        COOKIE,
        started.cookie,
        max_age=started.max_age,
        path=COOKIE_PATH,
        secure=base.startswith("https://"),
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get(
    "/{name}/callback",
    response_model=TokenPair,
    responses={
        302: {"description": "To return_to, with a one-time login_code"},
        400: {"description": "Bad state, replayed or refused code, provider error"},
        401: {"description": "The ID token failed verification"},
        403: {"description": "Email not verified, domain not allowed, account deactivated"},
        404: {"description": "No such provider"},
        409: {"description": "The account already has another identity of this provider"},
        502: {"description": "The provider cannot be reached"},
    },
)
async def callback(name: str, request: Request, oidc: Oidc) -> Response:
    """Where the provider sends the browser back. Without ``return_to``: the token pair,
    as ``/auth/login`` gives it."""
    done = await oidc.callback(
        name,
        dict(request.query_params),
        request.cookies.get(COOKIE),
        user_agent=request.headers.get("user-agent"),
        ip=client_ip(request),
    )
    if done.redirect is not None:
        response: Response = RedirectResponse(done.redirect, status_code=status.HTTP_302_FOUND)
    else:
        assert done.tokens is not None
        response = JSONResponse(done.tokens.model_dump())
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax")
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post(
    "/token",
    response_model=TokenPair,
    responses={
        400: {"description": "Unknown, expired or used login code"},
        403: {"description": "The account is deactivated"},
    },
)
async def token(
    body: LoginCodeRequest, response: Response, session: Session, oidc: Oidc
) -> TokenPair:
    """Swap a login code (from a ``return_to`` redirect; valid once, 60 s) for tokens."""
    response.headers["Cache-Control"] = "no-store"
    return await oidc.redeem(session, body.login_code)

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from agentmesh.identity.api_keys import service
from agentmesh.identity.api_keys.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    ApiKeyPage,
    ExchangeRequest,
    ExchangeResponse,
    ScopeOut,
)
from agentmesh.identity.deps import Auth, InternalService, SessionCaller
from agentmesh.shared.access import SCOPES
from agentmesh.shared.db import Session
from agentmesh.shared.pagination import CURSOR_RESPONSES, DEFAULT_LIMIT, Cursor, Limit

router = APIRouter(prefix="/api/v1/api-keys", tags=["api-keys"])
internal_router = APIRouter(prefix="/internal", tags=["internal"], include_in_schema=False)


@router.get("/scopes", response_model=list[ScopeOut])
async def list_scopes() -> list[ScopeOut]:
    """The scope vocabulary of API keys. A key with no scopes has every permission of its
    creator's role in its workspace; a key with scopes may do only what they name."""
    return [ScopeOut(scope=scope, allows=allows) for scope, allows in SCOPES.items()]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses={
        409: {
            "description": "The user already holds the most live keys allowed (too-many-api-keys)"
        },
    },
)
async def create_api_key(
    body: ApiKeyCreate,
    caller: SessionCaller,
    auth: Auth,
    session: Session,
    response: Response,
) -> ApiKeyCreated:
    """Issue an API key. The returned ``key`` is shown this once; store it now."""
    wid = caller.claims.get("wid")
    api_key, key = await service.create(
        auth, session, caller.user, body, uuid.UUID(wid) if wid else None
    )
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyCreated(**ApiKeyOut.model_validate(api_key).model_dump(), key=key)


@router.get("", response_model=ApiKeyPage, responses=CURSOR_RESPONSES)
async def list_api_keys(
    caller: SessionCaller, session: Session, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> ApiKeyPage:
    """The caller's active API keys (never their secrets), newest first, one page at a time."""
    keys, next_cursor = await service.list_keys(session, caller.user, limit=limit, cursor=cursor)
    return ApiKeyPage(items=[ApiKeyOut.model_validate(k) for k in keys], next_cursor=next_cursor)


@router.delete(
    "/{api_key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such key"}},
)
async def revoke_api_key(
    api_key_id: uuid.UUID, caller: SessionCaller, auth: Auth, session: Session
) -> None:
    """Revoke a key at once; gateways drop its cached token."""
    await service.revoke(auth, session, caller.user, api_key_id)


@internal_router.post("/api-keys/exchange", response_model=ExchangeResponse)
async def exchange_api_key(
    body: ExchangeRequest,
    _: InternalService,
    auth: Auth,
    session: Session,
    response: Response,
) -> ExchangeResponse:
    """Gateway only: trade an API key for a short-lived access token with its scopes."""
    api_key, user, token, expires_in = await service.exchange(auth, session, body.key)
    response.headers["Cache-Control"] = "no-store"
    return ExchangeResponse(
        access_token=token,
        expires_in=expires_in,
        api_key_id=api_key.key_id,
        user_id=user.id,
        scopes=api_key.scopes,
    )

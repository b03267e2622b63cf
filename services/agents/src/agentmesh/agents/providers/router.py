from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, status

from agentmesh.agents.deps import AppSecretBox, AppSettings
from agentmesh.agents.providers import service
from agentmesh.agents.providers.schemas import (
    ProviderCreate,
    ProviderOut,
    ProviderPage,
    ProviderTestResult,
    ProviderUpdate,
)
from agentmesh.agents.workspaces import (
    FORBIDDEN,
    AgentsRead,
    ProvidersWrite,
    administers,
    sees_secrets,
)
from agentmesh.shared.db import Session, release
from agentmesh.shared.deps import AppMemberships
from agentmesh.shared.pagination import CURSOR_RESPONSES, DEFAULT_LIMIT, Cursor, Limit

router = APIRouter(prefix="/api/v1/providers", tags=["providers"], responses=FORBIDDEN)
NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such provider in your workspace"}
}
BLOCKED: dict[int | str, dict[str, Any]] = {
    422: {"description": "base_url reaches a private address (address-not-allowed)"}
}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProviderOut, responses=BLOCKED)
async def create_provider(
    body: ProviderCreate,
    caller: ProvidersWrite,
    session: Session,
    box: AppSecretBox,
    settings: AppSettings,
) -> ProviderOut:
    """Add a model provider to the workspace (admins and owners): ``openai`` (any
    OpenAI-compatible ``base_url``), ``anthropic``, ``ollama``, ``azure_openai`` (the
    resource's ``base_url``, an ``api_version``; agents name the deployment as ``model``)
    or ``mistral``. The API key is encrypted at rest; only its last 4 characters are ever
    shown again, to admins and owners."""
    provider = await service.create(session, box, caller, body, policy=settings.outbound_policy)
    return service.to_out(provider, secrets=sees_secrets(caller))


@router.get("", response_model=ProviderPage, responses=CURSOR_RESPONSES)
async def list_providers(
    caller: AgentsRead, session: Session, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> ProviderPage:
    """The workspace's, oldest first, one page at a time; the first page starts with the
    built-in offline provider (beside its ``limit`` of the workspace's)."""
    providers, next_cursor = await service.list_owned(session, caller, limit=limit, cursor=cursor)
    secrets = sees_secrets(caller)
    items = [service.to_out(p, secrets=secrets) for p in providers]
    items = ([] if cursor else [service.OFFLINE]) + items
    return ProviderPage(items=items, next_cursor=next_cursor)


@router.get("/{provider_id}", response_model=ProviderOut, responses=NOT_YOURS)
async def get_provider(provider_id: uuid.UUID, caller: AgentsRead, session: Session) -> ProviderOut:
    """One provider (never its key)."""
    provider = await service.get_owned(session, caller, provider_id)
    return service.to_out(provider, secrets=sees_secrets(caller))


@router.patch(
    "/{provider_id}",
    response_model=ProviderOut,
    responses={
        **NOT_YOURS,
        **BLOCKED,
        403: {"description": "base_url: the workspace's admins only (provider-owner-only)"},
    },
)
async def update_provider(
    provider_id: uuid.UUID,
    body: ProviderUpdate,
    caller: ProvidersWrite,
    session: Session,
    box: AppSecretBox,
    settings: AppSettings,
    memberships: AppMemberships,
) -> ProviderOut:
    """Rename, move or re-key a provider (``"api_key": null`` removes the key). Only the
    workspace's admins and owners may change ``base_url`` (a platform admin who is not one
    gets 403 ``provider-owner-only``); a private address is a 422."""
    provider = await service.get_owned(session, caller, provider_id)
    may_repoint = administers(caller, provider.workspace_id, memberships)
    updated = await service.update(
        session, box, provider, body, may_repoint=may_repoint, policy=settings.outbound_policy
    )
    return service.to_out(updated, secrets=sees_secrets(caller))


@router.delete("/{provider_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_YOURS)
async def delete_provider(provider_id: uuid.UUID, caller: ProvidersWrite, session: Session) -> None:
    """Remove a provider and its key."""
    await session.delete(await service.get_owned(session, caller, provider_id))


@router.post("/{provider_id}/test", response_model=ProviderTestResult, responses=NOT_YOURS)
async def test_provider(
    provider_id: uuid.UUID,
    caller: ProvidersWrite,
    session: Session,
    box: AppSecretBox,
    settings: AppSettings,
) -> ProviderTestResult:
    """Make a minimal real call (list the provider's models) and report success, or the
    status and the provider's error type (never the answer's body)."""
    provider = await service.get_owned(session, caller, provider_id)
    await release(session)  # the provider may take its time: not on a pooled connection
    return await service.test_call(
        box, provider, settings.provider_test_timeout_seconds, settings.outbound_policy
    )

"""Model providers: CRUD with encrypted keys, a real test call, credentials for chat."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.providers.models import Provider
from agentmesh.agents.providers.schemas import (
    DEFAULT_BASE_URLS,
    ProviderCreate,
    ProviderOut,
    ProviderTestResult,
    ProviderUpdate,
)
from agentmesh.shared.auth import Principal
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.errors import NotFound
from agentmesh.shared.pagination import paginate

OFFLINE = ProviderOut(
    id="offline",
    kind="offline",
    name="Offline (built-in)",
    base_url=None,
    api_key_last4=None,
    builtin=True,
)


class ProviderNotFound(NotFound):
    type, title = "provider-not-found", "Provider not found"


def to_out(provider: Provider) -> ProviderOut:
    return ProviderOut(
        id=str(provider.id),
        kind=provider.kind,
        name=provider.name,  # type: ignore[arg-type]
        base_url=provider.base_url,
        api_key_last4=provider.api_key_last4,
        created_at=provider.created_at,
        updated_at=provider.updated_at,
    )


def _set_key(box: SecretBox, provider: Provider, key: str | None) -> None:
    if not key:
        provider.api_key_encrypted, provider.api_key_last4 = None, None
        return
    provider.api_key_encrypted = box.encrypt(key.encode())
    provider.api_key_last4 = key[-4:]


async def get_owned(
    session: AsyncSession, principal: Principal | uuid.UUID, provider_id: uuid.UUID
) -> Provider:
    """The provider if it belongs to the caller (or the caller is admin)."""
    provider = await session.get(Provider, provider_id)
    owner = principal if isinstance(principal, uuid.UUID) else principal.user_id
    admin = not isinstance(principal, uuid.UUID) and principal.is_admin
    if provider is None or (provider.owner_id != owner and not admin):
        raise ProviderNotFound("No such provider.")
    return provider


async def create(
    session: AsyncSession, box: SecretBox, principal: Principal, body: ProviderCreate
) -> Provider:
    provider = Provider(
        owner_id=principal.user_id,
        kind=body.kind,
        name=body.name,
        base_url=str(body.base_url).rstrip("/") if body.base_url else None,
    )
    _set_key(box, provider, body.api_key.get_secret_value() if body.api_key else None)
    session.add(provider)
    await session.flush()
    await session.refresh(provider)
    return provider


async def update(
    session: AsyncSession, box: SecretBox, provider: Provider, body: ProviderUpdate
) -> Provider:
    if body.name is not None:
        provider.name = body.name
    if "base_url" in body.model_fields_set:
        provider.base_url = str(body.base_url).rstrip("/") if body.base_url else None
    if "api_key" in body.model_fields_set:
        _set_key(box, provider, body.api_key.get_secret_value() if body.api_key else None)
    provider.updated_at = datetime.now(UTC)
    await session.flush()
    await session.refresh(provider)
    return provider


async def list_owned(
    session: AsyncSession, principal: Principal, *, limit: int, cursor: str | None
) -> tuple[list[Provider], str | None]:
    """One page of the caller's providers (admins: everyone's), oldest first."""
    query = select(Provider)
    if not principal.is_admin:
        query = query.where(Provider.owner_id == principal.user_id)
    return await paginate(
        session, query, (Provider.created_at, Provider.id), limit=limit, cursor=cursor
    )


def credentials(box: SecretBox, provider: Provider) -> dict[str, str | None]:
    key = box.decrypt(provider.api_key_encrypted).decode() if provider.api_key_encrypted else None
    return {
        "kind": provider.kind,
        "base_url": provider.base_url or DEFAULT_BASE_URLS[provider.kind],
        "api_key": key,
    }


async def test_call(box: SecretBox, provider: Provider, timeout: float) -> ProviderTestResult:
    """List the provider's models: the smallest real call that proves URL and key work."""
    creds = credentials(box, provider)
    base, key = creds["base_url"], creds["api_key"]
    headers: dict[str, str] = {}
    if provider.kind == "anthropic":
        url = f"{base}/v1/models"
        headers = {"x-api-key": key or "", "anthropic-version": "2023-06-01"}
    elif provider.kind == "ollama":
        url = f"{base}/api/tags"
    else:
        url = f"{base}/models"
        if key:
            headers["Authorization"] = f"Bearer {key}"
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return ProviderTestResult(
            ok=False, error=f"cannot reach the provider: {type(exc).__name__}"
        )
    latency = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return ProviderTestResult(
            ok=False,
            status=response.status_code,
            latency_ms=latency,
            error=_provider_error(response, key),
        )
    try:
        body = response.json()
        items = body.get("data") or body.get("models") or []
        models = [str(m.get("id") or m.get("name")) for m in items if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return ProviderTestResult(
            ok=False,
            status=200,
            latency_ms=latency,
            error="the provider's answer is not the expected JSON",
        )
    return ProviderTestResult(ok=True, status=200, latency_ms=latency, models=models[:100])


def _provider_error(response: httpx.Response, key: str | None) -> str:
    """The provider's own error message, trimmed, with our key masked if it echoed it."""
    try:
        body = response.json()
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = response.text
    message = str(message)
    if key:
        message = message.replace(key, "***")
    return f"HTTP {response.status_code}: {message[:300]}"

"""Model providers: CRUD with encrypted keys, a real test call, credentials for chat."""

from __future__ import annotations

import re
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
from agentmesh.agents.workspaces import can_see
from agentmesh.shared import outbound
from agentmesh.shared.access import Access
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.errors import AppError, Forbidden, NotFound
from agentmesh.shared.outbound import BlockedAddress, OutboundPolicy
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


class NotAzure(AppError):
    status, type, title = 422, "api-version-not-applicable", "api_version not applicable"


class OwnerOnly(Forbidden):
    """403: a platform admin may see and delete any workspace's provider, but only the
    workspace's own admins and owners may repoint it (its key would go to the new address).
    403 rather than 404: the platform admin can read it."""

    type, title = "provider-owner-only", "Only the workspace's admins may do this"


#: A provider's error ``type``/``code`` is reported only when it looks like one.
_ERROR_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
_STATUS_ERRORS = {
    401: "the provider refused the API key",
    403: "the provider refused the API key",
    404: "the provider has no such endpoint; check base_url",
    429: "the provider is rate limiting",
}


async def check_base_url(
    provider_kind: str, base_url: str | None, policy: OutboundPolicy | bool
) -> None:
    """422 ``address-not-allowed`` naming ``base_url`` when the URL the provider will be
    called at (``base_url`` or the kind's default) reaches a refused address. A host that
    does not resolve now is accepted: every use checks it again."""
    url = base_url or DEFAULT_BASE_URLS.get(provider_kind)
    if url is None:  # azure_openai: a base_url is required (checked by the schema)
        return
    await outbound.check_field(url, policy, "base_url", unresolvable_ok=True)


def to_out(provider: Provider, *, secrets: bool) -> ProviderOut:
    """The provider as shown; ``secrets``: with the key's last 4 characters (admins)."""
    return ProviderOut(
        id=str(provider.id),
        kind=provider.kind,
        name=provider.name,
        base_url=provider.base_url,
        api_version=provider.api_version,
        api_key_last4=provider.api_key_last4 if secrets else None,
        workspace_id=provider.workspace_id,
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
    session: AsyncSession, access: Access | uuid.UUID, provider_id: uuid.UUID
) -> Provider:
    """The provider if it is of the caller's workspace (``access``, or a workspace id for
    services), or the caller is a platform admin."""
    provider = await session.get(Provider, provider_id)
    if provider is None or not can_see(access, provider.workspace_id):
        raise ProviderNotFound("No such provider.")
    return provider


async def create(
    session: AsyncSession,
    box: SecretBox,
    access: Access,
    body: ProviderCreate,
    *,
    policy: OutboundPolicy | bool,
) -> Provider:
    await check_base_url(body.kind, str(body.base_url) if body.base_url else None, policy)
    provider = Provider(
        owner_id=access.user_id,
        workspace_id=access.workspace_id,
        kind=body.kind,
        name=body.name,
        base_url=str(body.base_url).rstrip("/") if body.base_url else None,
        api_version=body.api_version,
    )
    _set_key(box, provider, body.api_key.get_secret_value() if body.api_key else None)
    session.add(provider)
    await session.flush()
    await session.refresh(provider)
    return provider


async def update(
    session: AsyncSession,
    box: SecretBox,
    provider: Provider,
    body: ProviderUpdate,
    *,
    may_repoint: bool,
    policy: OutboundPolicy | bool,
) -> Provider:
    """``may_repoint``: the caller is an admin or owner of the provider's workspace."""
    if "base_url" in body.model_fields_set:
        if not may_repoint:
            raise OwnerOnly(
                "Only the workspace's admins and owners may change a provider's base_url.",
                extra={"field": "base_url"},
            )
        base_url = str(body.base_url).rstrip("/") if body.base_url else None
        await check_base_url(provider.kind, base_url, policy)
        provider.base_url = base_url
    if body.name is not None:
        provider.name = body.name
    if body.api_version is not None:
        if provider.kind != "azure_openai":
            raise NotAzure(
                "api_version is for azure_openai providers only.", extra={"field": "api_version"}
            )
        provider.api_version = body.api_version
    if "api_key" in body.model_fields_set:
        _set_key(box, provider, body.api_key.get_secret_value() if body.api_key else None)
    provider.updated_at = datetime.now(UTC)
    await session.flush()
    await session.refresh(provider)
    return provider


async def list_owned(
    session: AsyncSession, access: Access, *, limit: int, cursor: str | None
) -> tuple[list[Provider], str | None]:
    """One page of the workspace's providers, oldest first."""
    query = select(Provider).where(Provider.workspace_id == access.workspace_id)
    return await paginate(
        session, query, (Provider.created_at, Provider.id), limit=limit, cursor=cursor
    )


def credentials(box: SecretBox, provider: Provider) -> dict[str, str | None]:
    key = box.decrypt(provider.api_key_encrypted).decode() if provider.api_key_encrypted else None
    creds = {
        "kind": provider.kind,
        "base_url": provider.base_url or DEFAULT_BASE_URLS.get(provider.kind),
        "api_key": key,
    }
    if provider.api_version is not None:  # azure_openai only
        creds["api_version"] = provider.api_version
    return creds


async def test_call(
    box: SecretBox, provider: Provider, timeout: float, policy: OutboundPolicy | bool
) -> ProviderTestResult:
    """List the provider's models: the smallest real call that proves URL and key work.

    The call goes through the guarded client (the address is checked now, redirects are
    not followed). The answer reports the status and, from a provider-shaped error, its
    error type: never the body, which may come from anything the URL points at."""
    creds = credentials(box, provider)
    base, key = creds["base_url"], creds["api_key"]
    headers: dict[str, str] = {}
    if provider.kind == "anthropic":
        url = f"{base}/v1/models"
        headers = {"x-api-key": key or "", "anthropic-version": "2023-06-01"}
    elif provider.kind == "ollama":
        url = f"{base}/api/tags"
    elif provider.kind == "azure_openai":
        url = f"{base}/openai/models?api-version={creds['api_version']}"
        headers = {"api-key": key or ""}
    else:
        url = f"{base}/models"
        if key:
            headers["Authorization"] = f"Bearer {key}"
    started = time.perf_counter()
    try:
        async with outbound.async_client(policy, timeout=timeout, follow_redirects=False) as client:
            response = await client.get(url, headers=headers)
    except BlockedAddress as exc:
        error = f"the provider's address is not allowed: {exc}"
        return ProviderTestResult(ok=False, error_type="address-not-allowed", error=error)
    except httpx.TimeoutException:
        error = f"the provider did not answer within {timeout:g} s"
        return ProviderTestResult(ok=False, error_type="timeout", error=error)
    except httpx.HTTPError as exc:
        error = f"cannot reach the provider: {type(exc).__name__}"
        return ProviderTestResult(ok=False, error_type=type(exc).__name__, error=error)
    latency = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return ProviderTestResult(
            ok=False,
            status=response.status_code,
            latency_ms=latency,
            error_type=_provider_error_type(response),
            error=_status_error(response.status_code),
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
            error_type="unexpected-answer",
            error="the provider's answer is not the expected JSON",
        )
    return ProviderTestResult(ok=True, status=200, latency_ms=latency, models=models[:100])


def _status_error(status: int) -> str:
    if 300 <= status < 400:
        return f"the provider redirected (HTTP {status}); redirects are not followed"
    if status >= 500:
        return f"the provider failed (HTTP {status})"
    return f"{_STATUS_ERRORS.get(status, 'the provider refused the call')} (HTTP {status})"


def _provider_error_type(response: httpx.Response) -> str | None:
    """The error type of an OpenAI- or Anthropic-shaped error answer, else None: a type
    is a short identifier (``invalid_api_key``), never free text."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    for name in ("type", "code"):
        value = error.get(name)
        if isinstance(value, str) and _ERROR_TYPE.match(value):
            return value
    return None

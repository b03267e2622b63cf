"""API keys: issue (shown once), list, revoke, and exchange for a short-lived token."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update

from agentmesh.identity.api_keys.models import ApiKey
from agentmesh.identity.api_keys.schemas import ApiKeyCreate
from agentmesh.identity.auth.service import AuthService
from agentmesh.identity.crypto import hash_token, same_secret
from agentmesh.identity.errors import InvalidApiKey, TooManyApiKeys
from agentmesh.identity.users.models import User
from agentmesh.identity.workspaces import service as workspaces
from agentmesh.shared.errors import NotFound
from agentmesh.shared.events.contracts import ApiKeyCreated, ApiKeyRevoked
from agentmesh.shared.pagination import paginate

KEY_PREFIX = "am_"
#: last_used_at is written at most this often per key, to keep exchanges read-mostly.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def parse_key(key: str) -> tuple[str, str] | None:
    """``am_<key_id>_<secret>`` -> (key_id, secret); None when malformed."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


async def create(
    auth: AuthService, session, user: User, body: ApiKeyCreate, workspace_id: uuid.UUID | None
) -> tuple[ApiKey, str]:
    """A key of the workspace the caller's token is bound to."""
    await _check_key_limit(session, user, auth.settings.max_api_keys_per_user)
    workspace_id, _role = await auth.bound_workspace(session, user, workspace_id)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    api_key = ApiKey(
        key_id=key_id,
        user_id=user.id,
        workspace_id=workspace_id,
        name=body.name,
        scopes=sorted(set(body.scopes)),
        secret_hash=hash_token(secret),
        expires_at=body.expires_at,
    )
    session.add(api_key)
    await session.flush()
    await session.refresh(api_key)
    await auth.outbox.add(
        session,
        ApiKeyCreated(
            api_key_id=key_id,
            user_id=user.id,
            name=api_key.name,
            scopes=api_key.scopes,
            expires_at=api_key.expires_at,
        ),
    )
    return api_key, f"{KEY_PREFIX}{key_id}_{secret}"


async def _check_key_limit(session, user: User, limit: int) -> None:
    """At most ``limit`` live keys: many keys must not multiply what one user may do.
    The user's row is locked, so concurrent creations cannot both take the last place."""
    await session.execute(select(User.id).where(User.id == user.id).with_for_update())
    live = await session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.user_id == user.id,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > func.now()),
        )
    )
    if live >= limit:
        raise TooManyApiKeys(
            f"You already have {live} live API keys (at most {limit}); revoke one first.",
            extra={"limit": limit},
        )


async def list_keys(
    session, user: User, *, limit: int, cursor: str | None
) -> tuple[list[ApiKey], str | None]:
    """One page of the user's active keys, newest first."""
    query = select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
    return await paginate(
        session, query, (ApiKey.created_at, ApiKey.id), limit=limit, cursor=cursor, descending=True
    )


async def revoke(auth: AuthService, session, user: User, key_uuid: uuid.UUID) -> None:
    api_key = await session.get(ApiKey, key_uuid)
    if api_key is None or api_key.user_id != user.id or api_key.revoked_at is not None:
        raise NotFound("No such API key.")
    api_key.revoked_at = datetime.now(UTC)
    await session.flush()
    await auth.outbox.add(session, ApiKeyRevoked(api_key_id=api_key.key_id, user_id=user.id))


async def exchange(auth: AuthService, session, key: str) -> tuple[ApiKey, User, str, int]:
    """A valid, unexpired, unrevoked key of an active user -> a short-lived access token."""
    parsed = parse_key(key)
    if parsed is None:
        raise InvalidApiKey("Malformed API key.")
    key_id, secret = parsed
    api_key = await session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
    now = datetime.now(UTC)
    if (
        api_key is None
        or not same_secret(api_key.secret_hash, hash_token(secret))
        or api_key.revoked_at is not None
        or (api_key.expires_at is not None and api_key.expires_at <= now)
    ):
        raise InvalidApiKey("The API key is invalid, expired or revoked.")
    user = await session.get(User, api_key.user_id)
    if user is None or not user.is_active:
        raise InvalidApiKey("The API key's account is not active.")
    # The key acts with its creator's current role in its workspace, never more; a
    # creator who left the workspace leaves a dead key.
    role = await workspaces.role_of(session, api_key.workspace_id, user.id)
    if role is None:
        raise InvalidApiKey("The API key's creator is no longer a member of its workspace.")
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        await session.execute(
            update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=now)
        )
    # An API key acts as a user; it carries admin power only when asked for and held.
    roles = ["user"] + (["admin"] if "admin" in api_key.scopes and user.is_admin else [])
    token, expires_in = await auth.tokens.issue(
        session,
        user=user,
        scopes=api_key.scopes,
        api_key_id=api_key.key_id,
        roles=roles,
        not_after=api_key.expires_at,
        ttl_seconds=auth.settings.api_key_token_ttl_seconds,
        workspace_id=api_key.workspace_id,
        workspace_role=role,
    )
    return api_key, user, token, expires_in

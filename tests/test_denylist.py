"""Deactivation, logout and API-key revocation reach every service, not only gateways:
agents and chat, called directly (no gateway in front), refuse the token once identity
has written the deny list. The delays are measured and printed (``-s`` shows them)."""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy import update

from agentmesh.agents.app import create_app as create_agents
from agentmesh.agents.settings import AgentsSettings
from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.settings import ChatSettings
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.settings import IdentitySettings
from agentmesh.identity.users.models import User
from agentmesh.shared.testing.backbone import wait_until
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    serve_app,
)

PASSWORD = "correct horse battery staple"
#: One authenticated read per service.
PROBES = {"agents": "/api/v1/agents", "chat": "/api/v1/conversations"}


@pytest.fixture
async def platform(common_settings):
    """Identity, agents and chat over real HTTP, each with a client; no gateway."""
    async with AsyncExitStack() as stack:
        identity_app = create_identity(
            IdentitySettings(
                common=common_settings,
                key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                internal_token=TEST_INTERNAL_TOKEN,
            )
        )
        identity_url = await stack.enter_async_context(serve_app(identity_app))
        common = common_settings.model_copy(
            update={"jwks_url": f"{identity_url}/.well-known/jwks.json"}
        )
        agents_url = await stack.enter_async_context(
            serve_app(
                create_agents(
                    AgentsSettings(
                        common=common,
                        provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                        internal_token=TEST_INTERNAL_TOKEN,
                    )
                )
            )
        )
        chat_url = await stack.enter_async_context(
            serve_app(
                create_chat(
                    ChatSettings(
                        common=common,
                        internal_token=TEST_INTERNAL_TOKEN,
                    )
                )
            )
        )
        clients = {}
        for name, url in (("identity", identity_url), ("agents", agents_url), ("chat", chat_url)):
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=30)
            )
        clients["identity_app"] = identity_app
        yield clients


async def signup(identity: httpx.AsyncClient) -> tuple[str, str]:
    email = f"deny-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD, "name": "D"}
    registered = await identity.post("/api/v1/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    return registered.json()["id"], email


async def login(identity: httpx.AsyncClient, email: str) -> str:
    response = await identity.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def statuses(platform, token: str) -> dict[str, int]:
    return {
        name: (await platform[name].get(path, headers=bearer(token))).status_code
        for name, path in PROBES.items()
    }


async def refused_everywhere(platform, token: str, what: str) -> None:
    """Until agents and chat both answer 401; prints how long that took."""
    started = time.monotonic()

    async def refused() -> bool:
        return set((await statuses(platform, token)).values()) == {401}

    await wait_until(refused, timeout=10, interval=0.02)
    print(f"\n{what}: refused by agents and chat {time.monotonic() - started:.3f}s after")
    for name, path in PROBES.items():
        answer = await platform[name].get(path, headers=bearer(token))
        assert answer.headers["content-type"].startswith("application/problem+json")


async def test_deactivation_is_refused_by_agents_and_chat(platform):
    identity = platform["identity"]
    admin_id, admin_email = await signup(identity)
    async with platform["identity_app"].state.sessionmaker() as session, session.begin():
        await session.execute(
            update(User).where(User.id == uuid.UUID(admin_id)).values(roles=["admin", "user"])
        )
    admin = await login(identity, admin_email)
    user_id, email = await signup(identity)
    token = await login(identity, email)
    assert await statuses(platform, token) == {"agents": 200, "chat": 200}

    off = await identity.patch(
        f"/api/v1/users/{user_id}", json={"active": False}, headers=bearer(admin)
    )
    assert off.status_code == 200, off.text
    await refused_everywhere(platform, token, "deactivation")

    # Re-activated, the user's new tokens work again (the old one stays refused).
    await asyncio.sleep(1.1)  # iat has a one-second resolution: the next second's token
    on = await identity.patch(
        f"/api/v1/users/{user_id}", json={"active": True}, headers=bearer(admin)
    )
    assert on.status_code == 200, on.text
    fresh = await login(identity, email)
    assert await statuses(platform, fresh) == {"agents": 200, "chat": 200}
    assert set((await statuses(platform, token)).values()) == {401}


async def test_logout_ends_that_session_everywhere(platform):
    identity = platform["identity"]
    _, email = await signup(identity)
    ended, other = await login(identity, email), await login(identity, email)
    assert await statuses(platform, ended) == {"agents": 200, "chat": 200}

    assert (await identity.post("/api/v1/auth/logout", headers=bearer(ended))).status_code == 204
    await refused_everywhere(platform, ended, "logout")
    assert await statuses(platform, other) == {"agents": 200, "chat": 200}  # another session


async def test_a_revoked_keys_exchanged_token_is_refused_everywhere(platform):
    identity = platform["identity"]
    _, email = await signup(identity)
    session_token = await login(identity, email)
    created = await identity.post(
        "/api/v1/api-keys", json={"name": "k"}, headers=bearer(session_token)
    )
    assert created.status_code == 201, created.text
    exchanged = await identity.post(
        "/internal/api-keys/exchange",
        json={"key": created.json()["key"]},
        headers=bearer(TEST_INTERNAL_TOKEN),
    )
    assert exchanged.status_code == 200, exchanged.text
    key_token = exchanged.json()["access_token"]
    assert await statuses(platform, key_token) == {"agents": 200, "chat": 200}

    revoked = await identity.delete(
        f"/api/v1/api-keys/{created.json()['id']}", headers=bearer(session_token)
    )
    assert revoked.status_code == 204, revoked.text
    await refused_everywhere(platform, key_token, "API key revocation")
    assert await statuses(platform, session_token) == {"agents": 200, "chat": 200}

"""The platform over real HTTP: identity, agents and chat behind the gateway.

Identity issues the tokens; agents and chat verify them against its JWKS. Tests talk to
the gateway only, as a user (or an SDK) would.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest

from agentmesh.agents.app import create_app as create_agents
from agentmesh.agents.settings import AgentsSettings
from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.settings import ChatSettings
from agentmesh.gateway.app import create_app as create_gateway
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    serve_app,
)

PASSWORD = "correct horse battery staple"
#: Generous limits: these tests check behaviour, not the gateway's rate limits.
GENEROUS = {"rate_limit": {"rate": 100, "burst": 200}}


@pytest.fixture
async def gateway(common_settings):
    """A client of the gateway (``base_url`` is its real HTTP address) in front of
    identity, agents and chat, each served over HTTP."""
    async with AsyncExitStack() as stack:
        identity_url = await stack.enter_async_context(serve_app(create_identity(
            IdentitySettings(common=common_settings, key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                             internal_token=TEST_INTERNAL_TOKEN),
        )))  # fmt: skip
        common = common_settings.model_copy(
            update={"jwks_url": f"{identity_url}/.well-known/jwks.json"}
        )
        agents_url = await stack.enter_async_context(serve_app(create_agents(
            AgentsSettings(common=common, provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                           internal_token=TEST_INTERNAL_TOKEN, allow_private_network=True),
        )))  # fmt: skip
        chat_url = await stack.enter_async_context(serve_app(create_chat(
            ChatSettings(common=common, internal_token=TEST_INTERNAL_TOKEN,
                         allow_private_network=True),
        )))  # fmt: skip
        gateway_url = await stack.enter_async_context(serve_app(create_gateway(
            GatewaySettings(
                common=common_settings, identity_url=identity_url, agents_url=agents_url,
                chat_url=chat_url, internal_token=TEST_INTERNAL_TOKEN,
                groups={name: GENEROUS for name in
                        ("auth", "identity", "agents", "knowledge", "chat", "chat_runs")},
            ),
        )))  # fmt: skip
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=gateway_url, timeout=30)
        )
        yield client


@dataclass
class SdkAccount:
    """A user with an API key and one agent, ready for an OpenAI client."""

    api_key: str
    agent: dict
    base_url: str  # the gateway's /v1, as an OpenAI client's base_url


async def wait_for_model(gateway: httpx.AsyncClient, api_key: str, model: str) -> None:
    """Until chat has learned the agent (from its events) and lists it as a model."""
    headers = {"Authorization": f"Bearer {api_key}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        response = await gateway.get("/v1/models", headers=headers)
        assert response.status_code == 200, response.text
        if any(item["id"] == model for item in response.json()["data"]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"chat never listed {model}")


@pytest.fixture
def sdk_account(gateway):
    """Register and log in through the gateway, create an API key and an agent."""

    async def make(**agent_config) -> SdkAccount:
        email = f"sdk-{uuid.uuid4().hex[:10]}@example.com"
        body = {"email": email, "password": PASSWORD, "name": "SDK User"}
        registered = await gateway.post("/api/v1/auth/register", json=body)
        assert registered.status_code == 201, registered.text
        login = await gateway.post("/api/v1/auth/login", json=body)
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        key = await gateway.post("/api/v1/api-keys", json={"name": "sdk"}, headers=headers)
        assert key.status_code == 201, key.text
        config = {"name": "Keeper", "instructions": "You keep things.", "model": "offline",
                  **agent_config}  # fmt: skip
        agent = await gateway.post("/api/v1/agents", json=config, headers=headers)
        assert agent.status_code == 201, agent.text
        api_key = key.json()["key"]
        await wait_for_model(gateway, api_key, agent.json()["id"])
        return SdkAccount(api_key, agent.json(), f"{gateway.base_url}".rstrip("/") + "/v1")

    return make

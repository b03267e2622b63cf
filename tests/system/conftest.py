"""OpenAI-compatible clients against the platform (``gateway`` and ``signup`` come from
``tests/conftest.py``): a user with an API key and an agent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import pytest


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
def sdk_account(gateway, signup):
    """Register and log in through the gateway, create an API key and an agent."""

    async def make(**agent_config) -> SdkAccount:
        account = await signup("SDK User")
        headers = account.headers
        key = await gateway.post("/api/v1/api-keys", json={"name": "sdk"}, headers=headers)
        assert key.status_code == 201, key.text
        config = {
            "name": "Keeper",
            "instructions": "You keep things.",
            "model": "offline",
            **agent_config,
        }
        agent = await gateway.post("/api/v1/agents", json=config, headers=headers)
        assert agent.status_code == 201, agent.text
        api_key = key.json()["key"]
        await wait_for_model(gateway, api_key, agent.json()["id"])
        return SdkAccount(api_key, agent.json(), f"{gateway.base_url}".rstrip("/") + "/v1")

    return make

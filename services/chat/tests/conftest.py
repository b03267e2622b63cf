from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from agentmesh.agents.app import create_app as create_agents
from agentmesh.agents.settings import AgentsSettings
from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.models import AgentSnapshot
from agentmesh.chat.settings import ChatSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)


@pytest.fixture
def common(common_settings, token_issuer):
    return common_settings.model_copy(update={"jwks_url": token_issuer.jwks_url})


@pytest.fixture
async def agents(common):
    """The agents service: where agents are created (chat learns them from its events)."""
    app = create_agents(
        AgentsSettings(
            common=common,
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
            allow_private_network=True,
        )
    )
    async with app_client(app) as client:
        client.app = app
        yield client


def chat_settings(common, **overrides) -> ChatSettings:
    return ChatSettings(
        common=common, internal_token=TEST_INTERNAL_TOKEN, allow_private_network=True, **overrides
    )


@pytest.fixture
async def chat(common, agents):
    app = create_chat(chat_settings(common))
    async with app_client(app) as client:
        client.app = app
        yield client


async def wait_for_snapshot(
    chat, agent_id: str, version: int = 1, timeout: float = 20
) -> AgentSnapshot:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        async with chat.app.state.sessionmaker() as session:
            snapshot = await session.scalar(
                select(AgentSnapshot).where(AgentSnapshot.agent_id == uuid.UUID(agent_id))
            )
        if snapshot is not None and snapshot.version >= version:
            return snapshot
        await asyncio.sleep(0.05)
    raise AssertionError(f"chat never saw agent {agent_id} v{version}")


@pytest.fixture
def make_agent(agents, chat):
    async def make(headers: dict, **config) -> dict:
        body = {"name": "Keeper", "instructions": "You keep things.", "model": "offline", **config}
        created = await agents.post("/api/v1/agents", json=body, headers=headers)
        assert created.status_code == 201, created.text
        agent = created.json()
        await wait_for_snapshot(chat, agent["id"])
        return agent

    return make

"""Helpers of the workspace tests: a chat app on its own, shared workspaces with members
(their roles in the memberships bucket chat watches), and agents of a workspace as agents
announces them (``agents.agent.created`` on JetStream)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import nats
import pytest

from agentmesh.chat.app import create_app as create_chat
from agentmesh.shared.errors import PROBLEM_JSON
from agentmesh.shared.events.contracts import AgentConfig, AgentCreated
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.memberships import bucket, put_role
from agentmesh.shared.testing.fixtures import app_client

from .conftest import chat_settings, wait_for_snapshot

CONV = "/api/v1/conversations"
USAGE = "/api/v1/usage"
COMPLETIONS = "/v1/chat/completions"


@pytest.fixture
async def chat(common):
    """Chat alone: agents are announced by events the tests publish."""
    app = create_chat(chat_settings(common))
    async with app_client(app) as client:
        client.app = app
        yield client


@pytest.fixture
async def nc(nats_url):
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def publish(nc, payload: EventPayload | Envelope, source: str, msg_id: str | None = None):
    envelope = payload if isinstance(payload, Envelope) else Envelope.wrap(payload, source=source)
    return await nc.jetstream().publish(
        envelope.type,
        envelope.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or envelope.id},
    )


async def eventually(check, timeout: float = 20) -> float:
    """Poll ``check()`` until it holds; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"{check} never held")


@dataclass
class Workspace:
    """A shared workspace in chat's eyes: an id, and members with roles."""

    chat: object
    nc: object
    issuer: object
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    async def join(self, role: str, user_id: uuid.UUID | None = None) -> uuid.UUID:
        """A member with ``role``, once chat's membership view has it."""
        user_id = user_id or uuid.uuid4()
        await self.set_role(user_id, role)
        return user_id

    async def set_role(self, user_id: uuid.UUID, role: str | None) -> None:
        await put_role(await bucket(self.nc.jetstream()), self.id, user_id, role)
        view = self.chat.app.state.memberships

        async def seen() -> bool:
            return view.ready and view.role(self.id, user_id) == role

        await eventually(seen)

    def headers(self, user_id: uuid.UUID, role: str, **claims) -> dict[str, str]:
        """A token of ``user_id`` bound to this workspace with ``role``."""
        return self.issuer.headers(user_id, workspace_id=self.id, workspace_role=role, **claims)

    async def agent(self, owner_id: uuid.UUID | None = None, **config) -> str:
        return await announce_agent(self.chat, self.nc, self.id, owner_id or uuid.uuid4(), **config)


async def announce_agent(chat, nc, workspace_id, owner_id, **config) -> str:
    """An agent of ``workspace_id`` (None: a version 1 event, without it), as agents
    publishes it; returns its id once chat's read-model has it."""
    agent_id = uuid.uuid4()
    payload = AgentCreated(
        agent_id=agent_id,
        owner_id=owner_id,
        workspace_id=workspace_id,
        agent_version=1,
        config=AgentConfig(
            **{"name": "Keeper", "instructions": "You keep things.", "model": "offline", **config}
        ),
    )
    envelope = Envelope.wrap(payload, source="agents")
    if workspace_id is None:  # what an agents service from before workspaces sent
        data = {key: value for key, value in envelope.data.items() if key != "workspace_id"}
        envelope = envelope.model_copy(update={"version": 1, "data": data})
    await publish(nc, envelope, "agents")
    await wait_for_snapshot(chat, str(agent_id))
    return str(agent_id)


def assert_problem(response, status: int, slug: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text
    body = response.json()
    if slug:
        assert body["type"].endswith("/" + slug), body
    return body


async def converse(chat, headers: dict, agent_id: str, content: str = "Hello there"):
    """A new conversation with one turn: (conversation id, the turn's response)."""
    created = await chat.post(CONV, json={"agent_id": agent_id}, headers=headers)
    assert created.status_code == 201, created.text
    conversation_id = created.json()["id"]
    answer = await chat.post(
        f"{CONV}/{conversation_id}/messages", json={"content": content}, headers=headers
    )
    return conversation_id, answer


def completion(agent_id: str) -> dict:
    return {"model": agent_id, "messages": [{"role": "user", "content": "hi"}]}

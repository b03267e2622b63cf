"""Model providers in chat: the SDKs' HTTP clients come from the guarded factory, the
provider's address is checked on every run, and cached models are bounded and closed."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.llm import resolve
from agentmesh.chat.settings import ChatSettings
from agentmesh.shared.outbound import ClientCache, OutboundPolicy
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, app_client
from agentmesh.shared.testing.openai_server import FakeOpenAI

from .test_conversations import CONV


@pytest.fixture
async def fake_llm():
    async with FakeOpenAI(reply="hello there") as server:
        yield server


async def test_a_run_refuses_a_provider_address_the_operator_does_not_allow(
    common, agents, make_agent, token_issuer, fake_llm
):
    """The provider was accepted by agents (which allows private addresses here); chat,
    without an allow-list, refuses it before any call. With its port allowed it runs."""
    headers = token_issuer.headers()
    provider = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={
            "kind": "openai",
            "name": "local",
            "base_url": fake_llm.base_url,
            "api_key": fake_llm.api_key,
        },
    )
    agent = await make_agent(headers, provider_id=provider.json()["id"], model="fake-model")
    allowed = httpx.URL(fake_llm.base_url).netloc.decode()
    for allow_list, status in (((), 422), ((allowed,), 200)):
        settings = ChatSettings(
            common=common, internal_token=TEST_INTERNAL_TOKEN, allowed_private_hosts=allow_list
        )
        async with app_client(create_chat(settings)) as chat:
            body = {"agent_id": agent["id"], "title": "t"}
            conversation = (await chat.post(CONV, json=body, headers=headers)).json()
            answer = await chat.post(
                f"{CONV}/{conversation['id']}/messages", headers=headers, json={"content": "hi"}
            )
        assert answer.status_code == status, answer.text
        if status == 422:
            assert answer.json()["type"].endswith("/address-not-allowed")
            assert "AGENTMESH_ALLOWED_PRIVATE_HOSTS" in answer.json()["detail"]
            assert fake_llm.chat_attempts == 0  # refused before any connection
        else:
            assert answer.json()["content"] == "hello there" and fake_llm.chat_attempts == 1


async def test_a_model_dropped_from_the_cache_has_its_http_client_closed(monkeypatch, fake_llm):
    monkeypatch.setattr(
        resolve, "MODELS", ClientCache(maxsize=1, ttl=600, close=resolve._Built.aclose)
    )
    policy = OutboundPolicy(allowed_private=(httpx.URL(fake_llm.base_url).netloc.decode(),))

    async def take(model: str):
        chat = resolve.resolve_chat_model(
            provider_kind="openai",
            model=model,
            policy=policy,
            base_url=fake_llm.base_url,
            api_key=fake_llm.api_key,
        )
        await chat.ainvoke("hi")
        return chat

    first = await asyncio.create_task(take("model-a"))
    http = first.root_async_client._client  # the SDK's client: the guarded one we gave it
    assert type(http._transport).__name__ == "GuardedTransport2" and not http.is_closed
    await asyncio.create_task(take("model-b"))  # over maxsize: model-a is dropped
    for _ in range(5):
        await asyncio.sleep(0)
    assert http.is_closed


def test_chat_reads_the_same_allow_list(monkeypatch, common):
    monkeypatch.setenv("AGENTMESH_ALLOWED_PRIVATE_HOSTS", "[::1]:8000 vllm.internal:8000")
    settings = ChatSettings(common=common, internal_token=TEST_INTERNAL_TOKEN)
    assert settings.outbound_policy.endpoints == {("::1", 8000), ("vllm.internal", 8000)}

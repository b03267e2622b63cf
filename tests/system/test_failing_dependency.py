"""One user's failing dependency never opens the gateway's circuit for everyone.

User A's agent calls a model provider that refuses connections (a closed loopback port;
the platform of ``tests/conftest.py`` allows private addresses), their MCP server and
their knowledge base's embedding endpoint refuse too. Each failure is answered with a
type that names the user's dependency; none is counted as an outage of the service, so
user B keeps being served by every service.
"""

from __future__ import annotations

import httpx

from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.openai_server import FakeOpenAI

from .conftest import wait_for_model


async def call(
    gateway: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    expect: int,
    **kwargs,
) -> dict:
    response = await gateway.request(method, path, headers=headers, **kwargs)
    assert response.status_code == expect, f"{method} {path}: {response.text}"
    return response.json() if response.content else {}


async def agent_with_provider(gateway, headers, base_url: str, api_key: str) -> dict:
    provider = await call(
        gateway,
        "POST",
        "/api/v1/providers",
        headers,
        201,
        json={"kind": "openai", "name": "Mine", "base_url": base_url, "api_key": api_key},
    )
    agent = await call(
        gateway,
        "POST",
        "/api/v1/agents",
        headers,
        201,
        json={
            "name": "Helper",
            "instructions": "Help.",
            "provider_id": provider["id"],
            "model": "fake-model",
        },
    )
    return {"provider": provider, "agent": agent}


def type_of(response: httpx.Response) -> str:
    return response.json()["type"].rsplit("/", 1)[-1]


async def test_one_users_refusing_provider_leaves_every_service_to_the_others(gateway, signup):
    alice, bob = await signup("Alice"), await signup("Bob")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here: connection refused
    a = await agent_with_provider(gateway, alice.headers, f"{dead}/v1", "sk-alice-1234")
    key = await call(gateway, "POST", "/api/v1/api-keys", alice.headers, 201, json={"name": "a"})
    await wait_for_model(gateway, key["key"], a["agent"]["id"])
    conversation = await call(
        gateway,
        "POST",
        "/api/v1/conversations",
        alice.headers,
        201,
        json={"agent_id": a["agent"]["id"]},
    )
    messages = f"/api/v1/conversations/{conversation['id']}/messages"
    for _ in range(20):
        run = await gateway.post(messages, json={"content": "hello?"}, headers=alice.headers)
        assert run.status_code == 502, run.text
        assert type_of(run) == "model-unreachable"
    server = await call(
        gateway,
        "POST",
        "/api/v1/mcp-servers",
        alice.headers,
        201,
        json={"name": "Tools", "url": f"{dead}/mcp"},
    )
    for _ in range(6):
        tools = await gateway.get(
            f"/api/v1/mcp-servers/{server['id']}/tools", headers=alice.headers
        )
        assert tools.status_code == 502, tools.text
        assert type_of(tools) == "mcp-server-unreachable"
    kb = await call(
        gateway,
        "POST",
        "/api/v1/knowledge-bases",
        alice.headers,
        201,
        json={
            "name": "Remote",
            "embedding_provider_id": a["provider"]["id"],
            "embedding_model": "text-embedding-3-small",
        },
    )
    for _ in range(6):
        search = await gateway.post(
            f"/api/v1/knowledge-bases/{kb['id']}/search",
            json={"query": "x", "mode": "vector"},
            headers=alice.headers,
        )
        assert search.status_code == 502, search.text
        assert type_of(search) == "embedding-unreachable"

    breakers = gateway.app.state.proxy.breakers
    assert {key: b.state for key, b in breakers.items()} == dict.fromkeys(breakers, "closed")
    # Bob is served by every service and route group.
    async with FakeOpenAI(api_key="sk-bob-5678") as llm:
        b = await agent_with_provider(gateway, bob.headers, llm.base_url, "sk-bob-5678")
        await call(gateway, "GET", "/api/v1/users/me", bob.headers, 200)
        await call(gateway, "GET", "/api/v1/api-keys", bob.headers, 200)
        await call(gateway, "GET", "/api/v1/agents", bob.headers, 200)
        await call(gateway, "GET", "/api/v1/providers", bob.headers, 200)
        await call(gateway, "GET", "/api/v1/knowledge-bases", bob.headers, 200)
        await call(gateway, "GET", "/api/v1/conversations", bob.headers, 200)
        bob_key = await call(
            gateway, "POST", "/api/v1/api-keys", bob.headers, 201, json={"name": "b"}
        )
        await wait_for_model(gateway, bob_key["key"], b["agent"]["id"])
        chat = await call(
            gateway,
            "POST",
            "/api/v1/conversations",
            bob.headers,
            201,
            json={"agent_id": b["agent"]["id"]},
        )
        answer = await call(
            gateway,
            "POST",
            f"/api/v1/conversations/{chat['id']}/messages",
            bob.headers,
            200,
            json={"content": "hi"},
        )
        assert answer["content"] == "Fake reply to: hi"
    assert {key: b.state for key, b in breakers.items()} == dict.fromkeys(breakers, "closed")

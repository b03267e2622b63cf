"""An agent's ``fallbacks``: saved, versioned, bounded, and only of its workspace's providers."""

from __future__ import annotations

import uuid

AGENTS = "/api/v1/agents"
KEEPER = {"name": "Keeper", "instructions": "Keep notes.", "model": "offline"}


def problem(response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.json()["type"].rsplit("/", 1)[-1]


async def a_provider(agents, headers: dict) -> str:
    created = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={
            "kind": "openai",
            "name": "p",
            "base_url": "https://api.example.com/v1",
            "api_key": "sk-test-0123456789",
        },
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def test_fallbacks_are_saved_in_the_config_and_its_event(agents, token_issuer, outbox_events):
    headers = token_issuer.headers()
    plain = (await agents.post(AGENTS, json=KEEPER, headers=headers)).json()
    assert plain["fallbacks"] == []
    provider = await a_provider(agents, headers)
    fallbacks = [{"provider_id": provider, "model": "gpt-4o-mini"}, {"model": "small"}]
    created = await agents.post(
        AGENTS,
        headers=headers,
        json={**KEEPER, "provider_id": provider, "model": "gpt-4o", "fallbacks": fallbacks},
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["fallbacks"] == [fallbacks[0], {"provider_id": None, "model": "small"}]
    [event] = await outbox_events("agents.agent.created", agent["id"])
    assert event["data"]["config"]["fallbacks"] == agent["fallbacks"]
    url = f"{AGENTS}/{agent['id']}"
    cleared = await agents.patch(url, json={"fallbacks": None}, headers=headers)
    assert cleared.status_code == 200 and cleared.json()["fallbacks"] == []
    restored = await agents.post(f"{url}/versions/1/restore", headers=headers)
    assert restored.status_code == 200 and restored.json()["fallbacks"] == agent["fallbacks"]


async def test_a_fallback_provider_must_be_of_the_agents_workspace(agents, token_issuer):
    mine, theirs = token_issuer.headers(), token_issuer.headers()
    own = await a_provider(agents, mine)
    other = await a_provider(agents, theirs)  # another user's personal workspace
    for provider_id in (other, str(uuid.uuid4())):
        body = {**KEEPER, "fallbacks": [{"model": "a"}, {"provider_id": provider_id, "model": "b"}]}
        refused = await agents.post(AGENTS, json=body, headers=mine)
        assert refused.status_code == 422 and problem(refused) == "invalid-reference"
        assert refused.json()["field"] == "fallbacks[1].provider_id"
    agent = (await agents.post(AGENTS, json=KEEPER, headers=mine)).json()
    url = f"{AGENTS}/{agent['id']}"
    theirs_only = {"fallbacks": [{"provider_id": other, "model": "b"}]}
    patched = await agents.patch(url, headers=mine, json=theirs_only)
    assert patched.status_code == 422 and patched.json()["field"] == "fallbacks[0].provider_id"
    fine = await agents.patch(
        url, headers=mine, json={"fallbacks": [{"provider_id": own, "model": "b"}]}
    )
    assert fine.status_code == 200, fine.text


async def test_fallbacks_are_bounded_and_checked(agents, token_issuer):
    headers = token_issuer.headers()
    cases = (
        [{"model": f"m{i}"} for i in range(6)],  # at most 5
        [{"model": ""}],
        [{"provider_id": "not-a-uuid", "model": "m"}],
        [{"model": "m", "temperature": 1}],  # unknown field
        [{}],
    )
    for fallbacks in cases:
        response = await agents.post(
            AGENTS, json={**KEEPER, "fallbacks": fallbacks}, headers=headers
        )
        assert response.status_code == 422, fallbacks
        assert problem(response) == "validation-error"
        assert any(e["loc"][:2] == ["body", "fallbacks"] for e in response.json()["errors"])

"""An agent's ``knowledge`` (how its runs use its knowledge bases): defaults, validation,
updates, and the config chat receives."""

from __future__ import annotations

AGENTS = "/api/v1/agents"
KEEPER = {"name": "Keeper", "instructions": "Keep notes.", "model": "offline"}
DEFAULT = {"mode": "tool", "top_k": None, "min_score": None}


async def test_knowledge_defaults_to_tool_mode(agents, token_issuer, outbox_events):
    created = await agents.post(AGENTS, json=KEEPER, headers=token_issuer.headers())
    assert created.status_code == 201, created.text
    assert created.json()["knowledge"] == DEFAULT
    [event] = await outbox_events("agents.agent.created", created.json()["id"])
    assert event["data"]["config"]["knowledge"] == DEFAULT


async def test_knowledge_is_validated(agents, token_issuer):
    headers = token_issuer.headers()
    for knowledge, field in (
        ({"mode": "sometimes"}, "mode"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 21}, "top_k"),
        ({"min_score": 1.5}, "min_score"),
        ({"min_score": -0.1}, "min_score"),
        ({"k": 1}, "k"),
    ):
        refused = await agents.post(
            AGENTS, json={**KEEPER, "knowledge": knowledge}, headers=headers
        )
        assert refused.status_code == 422, (knowledge, refused.text)
        assert ["body", "knowledge", field] in [e["loc"] for e in refused.json()["errors"]]


async def test_an_update_sets_knowledge_and_chat_is_told(agents, token_issuer, outbox_events):
    headers = token_issuer.headers()
    agent = (await agents.post(AGENTS, json=KEEPER, headers=headers)).json()
    url = f"{AGENTS}/{agent['id']}"
    wanted = {"mode": "always", "top_k": 3, "min_score": 0.02}
    updated = await agents.patch(url, json={"knowledge": wanted}, headers=headers)
    assert updated.status_code == 200 and updated.json()["knowledge"] == wanted
    [event] = await outbox_events("agents.agent.updated", agent["id"])
    assert event["data"]["config"]["knowledge"] == wanted
    renamed = await agents.patch(url, json={"name": "Kept"}, headers=headers)
    assert renamed.json()["knowledge"] == wanted  # kept when not given
    reset = await agents.patch(url, json={"knowledge": None}, headers=headers)
    assert reset.json()["knowledge"] == DEFAULT

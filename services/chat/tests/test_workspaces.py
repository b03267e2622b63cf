"""Workspaces in chat: who may do what (roles, API-key scopes), conversations private to
their starter, agents of the token's workspace only, prompt revocation, and the workspace
named in events and in the RPCs to agents."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from sqlalchemy import select

from agentmesh.chat.models import AgentSnapshot

from . import workspaces
from .workspaces import (
    COMPLETIONS,
    CONV,
    USAGE,
    Workspace,
    announce_agent,
    assert_problem,
    completion,
    converse,
)

chat, nc = workspaces.chat, workspaces.nc  # fixtures: chat alone, a NATS client

ROLES = ("viewer", "member", "admin", "owner")


def matrix_rows(ws: Workspace, agent_id: str, other: uuid.UUID):
    """(name, method, path, body, the weakest role allowed: None for platform admins only)."""
    member_budget = f"/api/v1/workspaces/{ws.id}/members/{other}/budget"
    workspace_budget = f"/api/v1/workspaces/{ws.id}/budget"
    return [
        ("start a conversation", "POST", CONV, {"agent_id": agent_id}, "viewer"),
        ("list conversations", "GET", CONV, None, "viewer"),
        ("chat completion", "POST", COMPLETIONS, completion(agent_id), "viewer"),
        ("list models", "GET", "/v1/models", None, "viewer"),
        ("own usage", "GET", USAGE, None, "viewer"),
        ("usage by member", "GET", f"{USAGE}?group_by=member", None, "admin"),
        ("another member's usage", "GET", f"{USAGE}?user_id={other}", None, "admin"),
        ("read the workspace budget", "GET", workspace_budget, None, "viewer"),
        ("read a member's budget", "GET", member_budget, None, "admin"),
        ("set a member's budget", "PUT", member_budget, {"monthly_tokens": 10**6}, "admin"),
        ("set the workspace budget", "PUT", workspace_budget, {"monthly_tokens": 10**9}, None),
    ]


@pytest.mark.parametrize("role", [*ROLES, "platform admin"])
async def test_role_matrix(chat, nc, token_issuer, role):
    ws = Workspace(chat, nc, token_issuer)
    agent_id = await ws.agent()
    other = await ws.join("member")
    platform = token_issuer.headers(roles=("admin",))
    for path in (
        f"/api/v1/workspaces/{ws.id}/budget",
        f"/api/v1/workspaces/{ws.id}/members/{other}/budget",
    ):
        assert (await chat.put(path, json={"monthly_tokens": 10**9}, headers=platform)).is_success
    if role == "platform admin":
        headers, rank = token_issuer.headers(roles=("admin",), workspace_id=ws.id), 4
    else:
        headers, rank = ws.headers(await ws.join(role), role), ROLES.index(role)
    for name, method, path, body, weakest in matrix_rows(ws, agent_id, other):
        allowed = rank == 4 or (weakest is not None and rank >= ROLES.index(weakest))
        response = await chat.request(method, path, json=body, headers=headers)
        if allowed:
            assert response.is_success, (role, name, response.text)
        elif path.startswith("/v1/"):
            assert response.status_code == 403, (role, name, response.text)
        else:
            assert_problem(response, 403, "forbidden")


async def test_api_key_scopes(chat, nc, token_issuer):
    ws = Workspace(chat, nc, token_issuer)
    agent_id = await ws.agent()
    user = await ws.join("admin")

    def key(*scopes: str) -> dict[str, str]:
        return ws.headers(user, "admin", scopes=list(scopes), akid=uuid.uuid4().hex)

    reader = key("agents:read")
    assert_problem(
        await chat.post(CONV, json={"agent_id": agent_id}, headers=reader), 403, "forbidden"
    )
    assert_problem(await chat.get(CONV, headers=reader), 403, "forbidden")
    refused = await chat.post(COMPLETIONS, json=completion(agent_id), headers=reader)
    assert refused.status_code == 403 and "chat" in refused.json()["error"]["message"]
    assert (await chat.get("/v1/models", headers=reader)).status_code == 403
    assert_problem(await chat.get(USAGE, headers=reader), 403, "forbidden")

    chatter = key("chat")
    conversation_id, answer = await converse(chat, chatter, agent_id)
    assert answer.status_code == 200, answer.text
    run = await chat.get(f"/api/v1/runs/{answer.headers['X-Run-Id']}", headers=chatter)
    assert run.status_code == 200 and run.json()["workspace_id"] == str(ws.id)
    assert (await chat.post(COMPLETIONS, json=completion(agent_id), headers=chatter)).is_success
    assert_problem(await chat.get(USAGE, headers=chatter), 403, "forbidden")
    budget = f"/api/v1/workspaces/{ws.id}/members/{user}/budget"
    assert_problem(await chat.put(budget, json={"monthly_tokens": 5}, headers=chatter), 403)

    usage = await chat.get(USAGE, headers=key("usage:read"))
    assert usage.status_code == 200 and usage.json()["totals"]["runs"] == 2
    assert_problem(await chat.get(CONV, headers=key("usage:read")), 403)
    admin_key = key("workspace:admin")
    assert (await chat.put(budget, json={"monthly_tokens": 5}, headers=admin_key)).is_success
    # A key without scopes has every permission of its creator's role.
    assert (await chat.get(f"{CONV}/{conversation_id}", headers=key())).status_code == 200


async def test_conversations_are_private_between_members(chat, nc, token_issuer):
    ws = Workspace(chat, nc, token_issuer)
    agent_id = await ws.agent()
    ada, bob = await ws.join("member"), await ws.join("admin")
    ada_h, bob_h = ws.headers(ada, "member"), ws.headers(bob, "admin")
    conversation_id, answer = await converse(chat, ada_h, agent_id)
    assert answer.status_code == 200, answer.text
    run_id, message_id = answer.headers["X-Run-Id"], answer.json()["id"]
    mine = (await chat.get(CONV, headers=ada_h)).json()["items"]
    assert [c["id"] for c in mine] == [conversation_id]
    assert mine[0]["workspace_id"] == str(ws.id)

    # Bob shares the workspace and the agent, not Ada's conversation (even as an admin).
    assert (await chat.get(CONV, headers=bob_h)).json()["items"] == []
    path = f"{CONV}/{conversation_id}"
    for method, url, body in [
        ("GET", path, None),
        ("PATCH", path, {"title": "Mine now"}),
        ("GET", f"{path}/messages", None),
        ("POST", f"{path}/messages", {"content": "Hi"}),
        ("POST", f"{path}/messages/{message_id}/regenerate", {}),
        ("DELETE", path, None),
        ("GET", f"/api/v1/runs/{run_id}", None),
        ("POST", f"/api/v1/runs/{run_id}/cancel", None),
        ("GET", f"/api/v1/runs/{run_id}/events", None),
    ]:
        assert_problem(await chat.request(method, url, json=body, headers=bob_h), 404)
    # Bob's own conversation with the same agent is his alone.
    bobs, _ = await converse(chat, bob_h, agent_id)
    assert [c["id"] for c in (await chat.get(CONV, headers=ada_h)).json()["items"]] == [
        conversation_id
    ]
    assert_problem(await chat.get(f"{CONV}/{bobs}", headers=ada_h), 404)

    # Ada's token of her personal workspace does not reach her conversation in the team's.
    personal = token_issuer.headers(ada)
    assert (await chat.get(CONV, headers=personal)).json()["items"] == []
    assert_problem(await chat.get(path, headers=personal), 404, "conversation-not-found")
    assert (await chat.get(path, headers=ada_h)).status_code == 200


async def test_another_workspaces_agent_is_404(chat, nc, token_issuer):
    ours, theirs = Workspace(chat, nc, token_issuer), Workspace(chat, nc, token_issuer)
    our_agent, their_agent = await ours.agent(), await theirs.agent(name="Theirs")
    headers = ours.headers(await ours.join("owner"), "owner")
    assert_problem(await chat.post(CONV, json={"agent_id": their_agent}, headers=headers), 404)
    missing = await chat.post(COMPLETIONS, json=completion(their_agent), headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    models = {m["id"] for m in (await chat.get("/v1/models", headers=headers)).json()["data"]}
    assert our_agent in models and their_agent not in models and "theirs" not in models
    assert (await chat.post(COMPLETIONS, json=completion(our_agent), headers=headers)).is_success


async def test_a_version_1_agent_event_is_in_its_owners_personal_workspace(chat, nc, token_issuer):
    owner = uuid.uuid4()
    agent_id = await announce_agent(chat, nc, None, owner)
    async with chat.app.state.sessionmaker() as session:
        snapshot = await session.scalar(
            select(AgentSnapshot).where(AgentSnapshot.agent_id == uuid.UUID(agent_id))
        )
    assert snapshot is not None and snapshot.workspace_id == owner
    _, answer = await converse(chat, token_issuer.headers(owner), agent_id)
    assert answer.status_code == 200, answer.text
    team = Workspace(chat, nc, token_issuer)
    headers = team.headers(await team.join("owner", owner), "owner")  # the owner elsewhere
    assert_problem(await chat.post(CONV, json={"agent_id": agent_id}, headers=headers), 404)


async def test_a_removed_member_is_refused_within_2_seconds(chat, nc, token_issuer):
    ws = Workspace(chat, nc, token_issuer)
    agent_id = await ws.agent()
    user = await ws.join("member")
    headers = ws.headers(user, "member")
    conversation_id, answer = await converse(chat, headers, agent_id)
    assert answer.status_code == 200, answer.text

    removed = time.monotonic()
    await ws.set_role(user, None)  # identity's write when a member is removed
    while time.monotonic() - removed < 10:
        response = await chat.get(CONV, headers=headers)
        if response.status_code == 401:
            break
        await asyncio.sleep(0.005)
    delay_ms = (time.monotonic() - removed) * 1000
    print(f"removed member refused by chat after {delay_ms:.1f} ms (bound: 2000 ms)")
    assert_problem(response, 401, "membership-revoked")
    turn = await chat.post(
        f"{CONV}/{conversation_id}/messages", json={"content": "Again"}, headers=headers
    )
    assert_problem(turn, 401, "membership-revoked")
    refused = await chat.post(COMPLETIONS, json=completion(agent_id), headers=headers)
    assert refused.status_code == 401


async def test_events_name_the_workspace(chat, nc, token_issuer):
    ws = Workspace(chat, nc, token_issuer)
    agent_id = await ws.agent()
    headers = ws.headers(await ws.join("viewer"), "viewer")
    conversation_id, answer = await converse(chat, headers, agent_id)
    assert (await chat.delete(f"{CONV}/{conversation_id}", headers=headers)).status_code == 204
    outbox = chat.app.state.runtime.tables.outbox
    async with chat.app.state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(outbox.c.subject, outbox.c.envelope).where(
                    outbox.c.subject_id.in_([conversation_id, answer.json()["id"]])
                )
            )
        ).all()
    subjects = {subject: envelope for subject, envelope in rows}
    assert set(subjects) == {
        "chat.conversation.created",
        "chat.conversation.deleted",
        "chat.message.completed",
    }
    for envelope in subjects.values():
        assert envelope["version"] == 2 and envelope["data"]["workspace_id"] == str(ws.id)


async def test_rpcs_to_agents_name_the_agents_workspace(chat, nc, token_issuer):
    """Agents answers with the workspace's providers, MCP servers and knowledge bases:
    every request says which workspace (this test answers in agents' place)."""
    ws = Workspace(chat, nc, token_issuer)
    asked: dict[str, dict] = {}

    async def answer(msg) -> None:
        body = json.loads(msg.data)
        asked[msg.subject] = body
        reply = {"results": []} if msg.subject.endswith("search") else {"error": "not-found"}
        await msg.respond(json.dumps(reply).encode())

    subscription = await nc.subscribe("agents.rpc.>", cb=answer)
    try:
        tools = [{"id": "mcp", "config": {"server_id": str(uuid.uuid4()), "tools": ["add"]}}]
        kb = str(uuid.uuid4())
        agent_id = await ws.agent(tools=tools, knowledge_base_ids=[kb])
        headers = ws.headers(await ws.join("viewer"), "viewer")
        _, answered = await converse(chat, headers, agent_id, "use knowledge_search: refunds")
        assert answered.status_code == 200, answered.text
        priced = await ws.agent(name="Priced", provider_id=str(uuid.uuid4()))
        _, failed = await converse(chat, headers, priced)
        assert_problem(failed, 409, "provider-unavailable")
    finally:
        await subscription.unsubscribe()
    assert set(asked) == {
        "agents.rpc.mcp.connection",
        "agents.rpc.knowledge.search",
        "agents.rpc.provider.credentials",
    }
    for body in asked.values():
        assert body["workspace_id"] == str(ws.id)
    assert asked["agents.rpc.knowledge.search"]["knowledge_base_ids"] == [kb]

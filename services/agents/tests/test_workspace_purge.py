"""The workspace deletion saga, user erasure with workspaces, and chat's RPCs resolving
within a workspace; over real JetStream and Postgres."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import nats
import pytest
from nats.js.api import DeliverPolicy
from sqlalchemy import func, select, text

from agentmesh.shared.events.contracts import UserDeleted, WorkspaceDeleted
from agentmesh.shared.events.envelope import Envelope
from agentmesh.shared.events.streams import stream_name
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN

AGENTS, KBS = "/api/v1/agents", "/api/v1/knowledge-bases"
PROVIDERS, SERVERS = "/api/v1/providers", "/api/v1/mcp-servers"
TEXT = "Refunds are paid back to the original card within five business days."


@pytest.fixture
async def agents_private(agents_with):
    async with agents_with(allow_private_network=True) as client:
        yield client


async def made(client, path: str, body: dict, headers) -> dict:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code in (201, 202), response.text
    return response.json()


async def fill(client, headers) -> dict:
    """One of everything in the headers' workspace: an agent with two versions, a provider,
    an MCP server, a knowledge base with an indexed document (chunks)."""
    body = {
        "kind": "openai",
        "name": "P",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-x-1234",
    }
    provider = await made(client, PROVIDERS, body, headers)
    server = await made(client, SERVERS, {"name": "M", "url": "http://127.0.0.1:9/mcp"}, headers)
    kb = await made(client, KBS, {"name": "K"}, headers)
    await made(client, f"{KBS}/{kb['id']}/documents", {"text": TEXT, "filename": "r.txt"}, headers)
    agent = await made(client, AGENTS, {"name": "A", "knowledge_base_ids": [kb["id"]]}, headers)
    patched = await client.patch(f"{AGENTS}/{agent['id']}", json={"name": "B"}, headers=headers)
    assert patched.status_code == 200
    for _ in range(300):
        docs = (await client.get(f"{KBS}/{kb['id']}/documents", headers=headers)).json()["items"]
        if docs[0]["status"] == "ready":
            break
        await asyncio.sleep(0.1)
    assert docs[0]["status"] == "ready"
    return {"provider": provider, "server": server, "kb": kb, "agent": agent}


async def rows_of(client, workspace_id: uuid.UUID, made: dict) -> dict[str, int]:
    """How many rows the workspace still has, table by table."""
    counts = {}
    async with client.app.state.sessionmaker() as session:
        for table in ("agents", "providers", "mcp_servers", "knowledge_bases", "documents"):
            counts[table] = await session.scalar(
                text(f"SELECT count(*) FROM agents.{table} WHERE workspace_id = :w"),
                {"w": workspace_id},
            )
        for table, column, key in (
            ("agent_versions", "agent_id", "agent"),
            ("chunks", "knowledge_base_id", "kb"),
            ("kb_lexemes", "knowledge_base_id", "kb"),
        ):
            counts[table] = await session.scalar(
                text(f"SELECT count(*) FROM agents.{table} WHERE {column} = :id"),
                {"id": uuid.UUID(made[key]["id"])},
            )
    return counts


async def outbox_count(client, subject: str, subject_id) -> int:
    outbox = client.app.state.runtime.tables.outbox
    async with client.app.state.sessionmaker() as session:
        return await session.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.subject == subject, outbox.c.subject_id == str(subject_id))
        )


async def drained(js, durable: str) -> None:
    """Wait until the consumer has handled everything delivered to it."""
    for _ in range(300):
        info = await js.consumer_info(stream_name("identity"), durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{durable} did not drain")


async def test_workspace_deletion_purges_everything_once(agents_private, token_issuer, nats_url):
    team, other = uuid.uuid4(), uuid.uuid4()
    owner = token_issuer.headers(workspace_id=team, workspace_role="owner")
    neighbour = token_issuer.headers(workspace_id=other, workspace_role="owner")
    doomed = await fill(agents_private, owner)
    kept = await fill(agents_private, neighbour)
    before = await rows_of(agents_private, team, doomed)
    assert before["agent_versions"] == 2 and before["chunks"] >= 1 and before["kb_lexemes"] >= 1
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    purged = await js.subscribe("agents.workspace.purged", deliver_policy=DeliverPolicy.NEW)
    try:
        envelope = Envelope.wrap(
            WorkspaceDeleted(workspace_id=team, requested_at=datetime.now(UTC)), source="identity"
        )
        for copy in ("first", "redelivered"):  # two messages, one event: the inbox dedups
            await js.publish(
                envelope.type,
                envelope.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"{envelope.id}-{copy}"},
            )
        while True:
            message = await purged.next_msg(timeout=30)
            if json.loads(message.data)["data"]["workspace_id"] == str(team):
                break
        await drained(js, "agents-workspace-purge")
    finally:
        await nc.close()
    assert set((await rows_of(agents_private, team, doomed)).values()) == {0}
    assert await outbox_count(agents_private, "agents.workspace.purged", team) == 1
    assert await rows_of(agents_private, other, kept) == before  # the neighbour keeps all
    agent = await agents_private.get(f"{AGENTS}/{kept['agent']['id']}", headers=neighbour)
    assert agent.status_code == 200
    gone = await agents_private.get(f"{AGENTS}/{doomed['agent']['id']}", headers=owner)
    assert gone.status_code == 404


async def test_erasure_keeps_what_the_user_made_in_shared_workspaces(
    agents, token_issuer, nats_url
):
    user, team = uuid.uuid4(), uuid.uuid4()
    personal = token_issuer.headers(user)
    in_team = token_issuer.headers(user, workspace_id=team, workspace_role="member")
    teammate = token_issuer.headers(workspace_id=team, workspace_role="member")
    mine = await made(agents, AGENTS, {"name": "Mine"}, personal)
    shared = await made(agents, AGENTS, {"name": "Ours"}, in_team)
    shared_kb = await made(agents, KBS, {"name": "Ours"}, in_team)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    done = await js.subscribe("agents.erasure.completed", deliver_policy=DeliverPolicy.NEW)
    try:
        envelope = Envelope.wrap(
            UserDeleted(user_id=user, requested_at=datetime.now(UTC)), source="identity"
        )
        await js.publish(
            envelope.type, envelope.model_dump_json().encode(), headers={"Nats-Msg-Id": envelope.id}
        )
        while True:
            message = await done.next_msg(timeout=30)
            if json.loads(message.data)["data"]["user_id"] == str(user):
                break
    finally:
        await nc.close()
    admin = token_issuer.headers(roles=("user", "admin"))
    assert (await agents.get(f"{AGENTS}/{mine['id']}", headers=admin)).status_code == 404
    kept = await agents.get(f"{AGENTS}/{shared['id']}", headers=teammate)
    assert kept.status_code == 200 and kept.json()["owner_id"] == str(user)
    assert (await agents.get(f"{KBS}/{shared_kb['id']}", headers=teammate)).status_code == 200


# ------------------------------------------------------------------ chat's RPCs


async def test_rpcs_resolve_only_within_the_named_workspace(agents_private, token_issuer, nats_url):
    user, team_a, team_b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    in_a = token_issuer.headers(user, workspace_id=team_a, workspace_role="admin")
    stuff = await fill(agents_private, in_a)
    own = await made(
        agents_private,
        PROVIDERS,
        {"kind": "openai", "name": "Mine", "base_url": "http://127.0.0.1:9/v1"},
        token_issuer.headers(user),
    )
    nc = await nats.connect(nats_url)

    async def ask(subject: str, body: dict) -> dict:
        auth = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}
        reply = await nc.request(subject, json.dumps(body).encode(), timeout=10, headers=auth)
        return json.loads(reply.data)

    calls = {
        "agents.rpc.provider.credentials": {"provider_id": stuff["provider"]["id"]},
        "agents.rpc.mcp.connection": {"server_id": stuff["server"]["id"]},
        "agents.rpc.knowledge.search": {
            "knowledge_base_ids": [stuff["kb"]["id"]],
            "query": "refund",
        },
    }
    try:
        for subject, call in calls.items():
            body = {"user_id": str(user), **call}
            found = await ask(subject, {**body, "workspace_id": str(team_a)})
            assert "error" not in found, (subject, found)
            other = await ask(subject, {**body, "workspace_id": str(team_b)})
            assert other["error"] == "not_found", subject
            # An older chat names no workspace: the user's personal one, where it isn't.
            assert (await ask(subject, body))["error"] == "not_found", subject
            bad = await ask(subject, {**body, "workspace_id": "not-a-uuid"})
            assert bad["error"] == "bad_request", subject
        creds = await ask(
            "agents.rpc.provider.credentials",
            {
                "user_id": str(user),
                "provider_id": stuff["provider"]["id"],
                "workspace_id": str(team_a),
            },
        )
        assert creds["api_key"] == "sk-x-1234"
        personal = await ask(
            "agents.rpc.provider.credentials", {"user_id": str(user), "provider_id": own["id"]}
        )
        assert personal["provider_id"] == own["id"]
    finally:
        await nc.close()


async def test_events_name_the_workspace(agents, token_issuer, outbox_events):
    team = uuid.uuid4()
    headers = token_issuer.headers(workspace_id=team, workspace_role="member")
    agent = await made(agents, AGENTS, {"name": "A"}, headers)
    url = f"{AGENTS}/{agent['id']}"
    assert (await agents.patch(url, json={"name": "B"}, headers=headers)).status_code == 200
    assert (await agents.delete(url, headers=headers)).status_code == 204
    for subject in ("agents.agent.created", "agents.agent.updated", "agents.agent.deleted"):
        (event,) = await outbox_events(subject, agent["id"])
        assert event["data"]["workspace_id"] == str(team), subject
    kb = await made(agents, KBS, {"name": "K"}, headers)
    doc = await made(agents, f"{KBS}/{kb['id']}/documents", {"text": TEXT}, headers)
    for _ in range(300):
        if events := await outbox_events("agents.knowledge.document.indexed", doc["id"]):
            break
        await asyncio.sleep(0.1)
    assert events[0]["data"]["workspace_id"] == str(team)
    assert events[0]["data"]["status"] == "ready"

"""Workspaces in the agents service, through HTTP against real Postgres and NATS: the role
x route matrix, sharing within a workspace, another workspace's 404s, API-key scopes,
secrets' last 4 characters, and a removed member refused promptly."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import pytest

from agentmesh.agents.app import create_app
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.memberships import ROLES, bucket, put_role
from agentmesh.shared.settings import CommonSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)

AGENTS, KBS = "/api/v1/agents", "/api/v1/knowledge-bases"
PROVIDERS, SERVERS = "/api/v1/providers", "/api/v1/mcp-servers"
#: Never listening: providers and MCP servers are saved, not reached (their calls fail).
NOWHERE = "http://127.0.0.1:9"
TEXT = "Refunds are paid back to the original card within five business days."


def problem(response) -> str:
    return response.json().get("type", "").rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
async def client(migrated_database_url, nats_url, token_issuer):
    """One agents app for the module (the matrix makes many requests, not many apps)."""
    common = CommonSettings(
        env="test",
        database_url=migrated_database_url,
        nats_url=nats_url,
        log_json=True,
        outbox_sweep_seconds=0.5,
        consumer_backoff_seconds=0.05,
        jwks_url=token_issuer.jwks_url,
    )
    app = create_app(
        AgentsSettings(
            common=common,
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
            allow_private_network=True,
        )
    )
    async with app_client(app) as http:
        http.app = app
        yield http


@dataclass
class Team:
    """A shared workspace and a token per role in it (each role a different user)."""

    id: uuid.UUID
    users: dict[str, uuid.UUID]
    headers: dict[str, dict[str, str]]


def team(token_issuer) -> Team:
    workspace = uuid.uuid4()
    users = {role: uuid.uuid4() for role in ROLES}
    headers = {
        role: token_issuer.headers(user, workspace_id=workspace, workspace_role=role)
        for role, user in users.items()
    }
    return Team(workspace, users, headers)


async def made(client, path: str, body: dict, headers) -> dict:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code in (201, 202), response.text
    return response.json()


async def ready(client, headers, kb_id: str) -> list[dict]:
    for _ in range(300):
        docs = (await client.get(f"{KBS}/{kb_id}/documents", headers=headers)).json()["items"]
        if docs and all(d["status"] in ("ready", "failed") for d in docs):
            return docs
        await asyncio.sleep(0.1)
    raise AssertionError("documents not indexed")


@pytest.fixture(scope="module")
async def world(client, token_issuer) -> dict:
    """A team workspace holding one of everything, made by its owner."""
    t = team(token_issuer)
    owner = t.headers["owner"]
    body = {"kind": "openai", "name": "P", "base_url": f"{NOWHERE}/v1", "api_key": "sk-t-1234"}
    provider = await made(client, PROVIDERS, body, owner)
    server = await made(
        client,
        SERVERS,
        {"name": "M", "url": f"{NOWHERE}/mcp", "auth_header_value": "Bearer tok-abcdefgh-5678"},
        owner,
    )
    kb = await made(client, KBS, {"name": "Policies"}, owner)
    doc = await made(
        client, f"{KBS}/{kb['id']}/documents", {"text": TEXT, "filename": "r.txt"}, owner
    )
    agent = await made(
        client,
        AGENTS,
        {"name": "Keeper", "provider_id": provider["id"], "knowledge_base_ids": [kb["id"]]},
        owner,
    )
    await ready(client, owner, kb["id"])
    return {"team": t, "provider": provider, "server": server, "kb": kb, "doc": doc, "agent": agent}


# ------------------------------------------------------------------ the role matrix


@dataclass
class Route:
    name: str
    role: str  # the weakest role allowed
    method: str
    path: Callable[[object, dict], Awaitable[str]]  # (client, world) -> the URL
    ok: int
    body: dict | None = None


def fixed(template: str):
    async def path(client, w):
        return template.format(
            agent=w["agent"]["id"],
            kb=w["kb"]["id"],
            doc=w["doc"]["id"],
            provider=w["provider"]["id"],
            server=w["server"]["id"],
        )

    return path


def fresh(kind: str, suffix: str = ""):
    """A URL of a new resource of ``kind`` (made by the team's owner): writes that change or
    delete it don't disturb the shared world."""

    async def path(client, w):
        owner = w["team"].headers["owner"]
        if kind == "agent":
            return f"{AGENTS}/{(await made(client, AGENTS, {'name': 'Temp'}, owner))['id']}{suffix}"
        if kind == "provider":
            body = {"kind": "openai", "name": "T", "base_url": f"{NOWHERE}/v1"}
            return f"{PROVIDERS}/{(await made(client, PROVIDERS, body, owner))['id']}{suffix}"
        if kind == "server":
            body = {"name": "T", "url": f"{NOWHERE}/mcp"}
            return f"{SERVERS}/{(await made(client, SERVERS, body, owner))['id']}{suffix}"
        kb = await made(client, KBS, {"name": "Temp"}, owner)
        if kind == "doc":
            body = {"text": f"doc {uuid.uuid4()}", "filename": "d.txt"}
            doc = await made(client, f"{KBS}/{kb['id']}/documents", body, owner)
            return f"{KBS}/{kb['id']}/documents/{doc['id']}"
        return f"{KBS}/{kb['id']}{suffix}"

    return path


ROUTES = [
    Route("list agents", "viewer", "GET", fixed(AGENTS), 200),
    Route("read agent", "viewer", "GET", fixed(AGENTS + "/{agent}"), 200),
    Route("list versions", "viewer", "GET", fixed(AGENTS + "/{agent}/versions"), 200),
    Route("read version", "viewer", "GET", fixed(AGENTS + "/{agent}/versions/1"), 200),
    Route("tools catalog", "viewer", "GET", fixed("/api/v1/tools"), 200),
    Route("create agent", "member", "POST", fixed(AGENTS), 201, {"name": "New"}),
    Route("update agent", "member", "PATCH", fresh("agent"), 200, {"name": "Renamed"}),
    Route("delete agent", "member", "DELETE", fresh("agent"), 204),
    Route("restore version", "member", "POST", fresh("agent", "/versions/1/restore"), 200),
    Route("list kbs", "viewer", "GET", fixed(KBS), 200),
    Route("read kb", "viewer", "GET", fixed(KBS + "/{kb}"), 200),
    Route("list documents", "viewer", "GET", fixed(KBS + "/{kb}/documents"), 200),
    Route("read document", "viewer", "GET", fixed(KBS + "/{kb}/documents/{doc}"), 200),
    Route("search", "viewer", "POST", fixed(KBS + "/{kb}/search"), 200, {"query": "refund"}),
    Route("create kb", "member", "POST", fixed(KBS), 201, {"name": "New"}),
    Route("update kb", "member", "PATCH", fresh("kb"), 200, {"name": "Renamed"}),
    Route("reindex kb", "member", "POST", fresh("kb", "/reindex"), 202),
    Route("delete kb", "member", "DELETE", fresh("kb"), 204),
    Route(
        "upload document",
        "member",
        "POST",
        fresh("kb", "/documents"),
        202,
        {"text": "A new page.", "filename": "n.txt"},
    ),
    Route("delete document", "member", "DELETE", fresh("doc"), 204),
    Route("list providers", "viewer", "GET", fixed(PROVIDERS), 200),
    Route("read provider", "viewer", "GET", fixed(PROVIDERS + "/{provider}"), 200),
    Route(
        "create provider",
        "admin",
        "POST",
        fixed(PROVIDERS),
        201,
        {"kind": "openai", "name": "New", "base_url": f"{NOWHERE}/v1"},
    ),
    Route(
        "update provider", "admin", "PATCH", fresh("provider"), 200, {"base_url": f"{NOWHERE}/v2"}
    ),
    Route("delete provider", "admin", "DELETE", fresh("provider"), 204),
    Route("test provider", "admin", "POST", fresh("provider", "/test"), 200),
    Route("list mcp servers", "viewer", "GET", fixed(SERVERS), 200),
    Route("read mcp server", "viewer", "GET", fixed(SERVERS + "/{server}"), 200),
    Route("list mcp tools", "viewer", "GET", fixed(SERVERS + "/{server}/tools"), 502),
    Route(
        "create mcp server",
        "admin",
        "POST",
        fixed(SERVERS),
        201,
        {"name": "New", "url": f"{NOWHERE}/mcp"},
    ),
    Route("update mcp server", "admin", "PATCH", fresh("server"), 200, {"name": "Renamed"}),
    Route("delete mcp server", "admin", "DELETE", fresh("server"), 204),
]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("role", ROLES)
async def test_role_matrix(client, world, role, route):
    url = await route.path(client, world)
    response = await client.request(
        route.method, url, json=route.body, headers=world["team"].headers[role]
    )
    allowed = ROLES.index(role) >= ROLES.index(route.role)
    if allowed:
        assert response.status_code == route.ok, (role, route.name, response.text)
    else:
        assert response.status_code == 403, (role, route.name, response.text)
        assert problem(response) == "forbidden"


# ------------------------------------------------------------------ secrets' last 4


@pytest.mark.parametrize("role", ROLES)
async def test_secrets_last_4_only_for_admins_and_owners(client, world, role):
    headers = world["team"].headers[role]
    shown = role in ("admin", "owner")
    provider = (await client.get(f"{PROVIDERS}/{world['provider']['id']}", headers=headers)).json()
    assert provider["api_key_last4"] == ("1234" if shown else None)
    listed = (await client.get(PROVIDERS, headers=headers)).json()["items"]
    mine = next(p for p in listed if p["id"] == world["provider"]["id"])
    assert mine["api_key_last4"] == ("1234" if shown else None)
    server = (await client.get(f"{SERVERS}/{world['server']['id']}", headers=headers)).json()
    assert server["auth_header_value_last4"] == ("5678" if shown else None)
    assert server["has_auth"] is True


# ------------------------------------------------------------------ sharing


async def test_members_share_agents_and_knowledge(client, token_issuer):
    """Member B reads, searches and edits what member A made; A's token for their own
    personal workspace does not see it (it is the team's, not A's)."""
    t = team(token_issuer)
    a, b = t.headers["member"], token_issuer.headers(workspace_id=t.id, workspace_role="member")
    kb = await made(client, KBS, {"name": "Shared"}, a)
    await made(client, f"{KBS}/{kb['id']}/documents", {"text": TEXT, "filename": "r.txt"}, a)
    agent = await made(client, AGENTS, {"name": "Helper", "knowledge_base_ids": [kb["id"]]}, a)
    assert agent["workspace_id"] == str(t.id) and agent["owner_id"] == str(t.users["member"])
    assert kb["workspace_id"] == str(t.id)
    listed = (await client.get(AGENTS, headers=b)).json()["items"]
    assert [x["id"] for x in listed] == [agent["id"]]
    assert (await client.get(f"{AGENTS}/{agent['id']}", headers=b)).status_code == 200
    assert [k["id"] for k in (await client.get(KBS, headers=b)).json()["items"]] == [kb["id"]]
    assert (await ready(client, b, kb["id"]))[0]["status"] == "ready"
    found = await client.post(f"{KBS}/{kb['id']}/search", json={"query": "refund"}, headers=b)
    assert found.status_code == 200
    assert found.json()["results"][0]["content"].startswith("Refunds are paid")
    edited = await client.patch(f"{AGENTS}/{agent['id']}", json={"name": "Ours"}, headers=b)
    assert edited.status_code == 200 and edited.json()["owner_id"] == str(t.users["member"])
    personal = token_issuer.headers(t.users["member"])  # the same user, another workspace
    assert (await client.get(f"{AGENTS}/{agent['id']}", headers=personal)).status_code == 404
    assert (await client.get(AGENTS, headers=personal)).json()["items"] == []


async def test_another_workspaces_resources_are_404(client, world, token_issuer):
    stranger = team(token_issuer).headers["owner"]
    ids = {k: world[k]["id"] for k in ("agent", "kb", "provider", "server", "doc")}
    for method, path, kind in (
        ("GET", f"{AGENTS}/{ids['agent']}", "agent-not-found"),
        ("PATCH", f"{AGENTS}/{ids['agent']}", "agent-not-found"),
        ("DELETE", f"{AGENTS}/{ids['agent']}", "agent-not-found"),
        ("GET", f"{AGENTS}/{ids['agent']}/versions", "agent-not-found"),
        ("GET", f"{KBS}/{ids['kb']}", "knowledge-base-not-found"),
        ("DELETE", f"{KBS}/{ids['kb']}", "knowledge-base-not-found"),
        ("GET", f"{KBS}/{ids['kb']}/documents/{ids['doc']}", "knowledge-base-not-found"),
        ("POST", f"{KBS}/{ids['kb']}/search", "knowledge-base-not-found"),
        ("GET", f"{PROVIDERS}/{ids['provider']}", "provider-not-found"),
        ("DELETE", f"{PROVIDERS}/{ids['provider']}", "provider-not-found"),
        ("GET", f"{SERVERS}/{ids['server']}", "mcp-server-not-found"),
        ("DELETE", f"{SERVERS}/{ids['server']}", "mcp-server-not-found"),
    ):
        body = {"query": "x"} if path.endswith("search") else {"name": "x"}
        response = await client.request(method, path, json=body, headers=stranger)
        assert response.status_code == 404 and problem(response) == kind, (method, path)
    for path in (AGENTS, KBS, SERVERS):
        assert (await client.get(path, headers=stranger)).json()["items"] == []
    assert [p["id"] for p in (await client.get(PROVIDERS, headers=stranger)).json()["items"]] == [
        "offline"
    ]
    # An agent may name only its own workspace's provider, knowledge bases and MCP servers.
    for body, field in (
        ({"provider_id": ids["provider"]}, "provider_id"),
        ({"knowledge_base_ids": [ids["kb"]]}, "knowledge_base_ids"),
        (
            {"tools": [{"id": "mcp", "config": {"server_id": ids["server"], "tools": ["a"]}}]},
            "tools[0].config.server_id",
        ),
    ):
        refused = await client.post(AGENTS, json={"name": "Thief", **body}, headers=stranger)
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    stolen = {"name": "x", "embedding_provider_id": ids["provider"], "embedding_model": "m"}
    refused = await client.post(KBS, json=stolen, headers=stranger)
    assert refused.status_code == 422 and refused.json()["field"] == "embedding_provider_id"


# ------------------------------------------------------------------ API-key scopes


def key(token_issuer, t: Team, role: str, scopes: list[str]) -> dict[str, str]:
    """An API key's token: the creator's role in the workspace, narrowed to ``scopes``."""
    return token_issuer.headers(
        t.users[role],
        workspace_id=t.id,
        workspace_role=role,
        scopes=scopes,
        akid=f"ak_{uuid.uuid4().hex[:12]}",
    )


async def test_api_key_scopes_are_enforced(client, world, token_issuer):
    t = world["team"]
    agent_url = f"{AGENTS}/{world['agent']['id']}"
    reader = key(token_issuer, t, "owner", ["agents:read"])
    assert (await client.get(AGENTS, headers=reader)).status_code == 200
    assert (await client.get(agent_url, headers=reader)).status_code == 200
    assert (await client.get("/api/v1/tools", headers=reader)).status_code == 200
    for method, path, body in (
        ("POST", AGENTS, {"name": "No"}),
        ("PATCH", agent_url, {"name": "No"}),
        ("GET", KBS, None),
        ("POST", PROVIDERS, {"kind": "openai", "name": "No"}),
    ):
        refused = await client.request(method, path, json=body, headers=reader)
        assert refused.status_code == 403 and problem(refused) == "forbidden", (method, path)
    chat = key(token_issuer, t, "owner", ["chat"])
    for method, path, body in (("POST", AGENTS, {"name": "No"}), ("GET", AGENTS, None)):
        refused = await client.request(method, path, json=body, headers=chat)
        assert refused.status_code == 403 and problem(refused) == "forbidden", (method, path)
    writer = key(token_issuer, t, "member", ["agents:write"])  # implies agents:read
    assert (await client.post(AGENTS, json={"name": "Yes"}, headers=writer)).status_code == 201
    assert (await client.get(AGENTS, headers=writer)).status_code == 200
    viewer_key = key(token_issuer, t, "viewer", ["agents:write"])  # never more than the role
    refused = await client.post(AGENTS, json={"name": "No"}, headers=viewer_key)
    assert refused.status_code == 403
    knowledge = key(token_issuer, t, "member", ["knowledge:read"])
    search = f"{KBS}/{world['kb']['id']}/search"
    assert (await client.post(search, json={"query": "refund"}, headers=knowledge)).is_success
    refused = await client.post(KBS, json={"name": "No"}, headers=knowledge)
    assert refused.status_code == 403
    # An admin's key without providers:write reads providers, without their secrets' end.
    provider_url = f"{PROVIDERS}/{world['provider']['id']}"
    narrow = key(token_issuer, t, "admin", ["agents:read"])
    assert (await client.get(provider_url, headers=narrow)).json()["api_key_last4"] is None
    wide = key(token_issuer, t, "admin", ["agents:read", "providers:write"])
    assert (await client.get(provider_url, headers=wide)).json()["api_key_last4"] == "1234"
    unscoped = key(token_issuer, t, "admin", [])  # no scopes: everything the role may
    assert (await client.get(provider_url, headers=unscoped)).json()["api_key_last4"] == "1234"


# ------------------------------------------------------------------ prompt revocation


async def test_a_removed_member_is_refused_promptly(client, token_issuer, nats_url):
    t = team(token_issuer)
    headers = t.headers["member"]
    assert (await client.get(AGENTS, headers=headers)).status_code == 200
    nc = await nats.connect(nats_url)
    try:
        kv = await bucket(nc.jetstream())
        await put_role(kv, t.id, t.users["member"], None)  # identity's write on removal
        removed = time.perf_counter()
        while True:
            response = await client.get(AGENTS, headers=headers)
            if response.status_code == 401:
                break
            assert response.status_code == 200, response.text
            assert time.perf_counter() - removed < 10, "still allowed after 10 s"
            await asyncio.sleep(0.005)
        delay = time.perf_counter() - removed
    finally:
        await nc.close()
    assert problem(response) == "membership-revoked"
    print(f"agents refused the removed member {delay * 1000:.1f} ms after the bucket write")
    others = await client.get(AGENTS, headers=t.headers["viewer"])
    assert others.status_code == 200  # only that membership ended

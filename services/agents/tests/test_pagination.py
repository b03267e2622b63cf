"""Every list of the agents service pages the same way: ``?limit=&cursor=`` in,
``{"items", "next_cursor"}`` out, and a cursor it did not give out is a 400."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import pytest
from sqlalchemy import event

from agentmesh.agents.app import create_app
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)

KBS = "/api/v1/knowledge-bases"
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
async def agents_private(common_settings, token_issuer):
    """Agents allowed to store loopback URLs (providers and MCP servers never contacted)."""
    common = common_settings.model_copy(update={"jwks_url": token_issuer.jwks_url})
    app = create_app(
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


@pytest.fixture
def headers(token_issuer) -> dict[str, str]:
    return token_issuer.headers(uuid.uuid4())


async def make_three(client, headers, kind: str) -> tuple[str, list[str]]:
    """Three of ``kind``; returns the list's path and the ids in their listed order."""
    ids = []
    if kind == "versions":
        agent = await client.post("/api/v1/agents", json={"name": "v1"}, headers=headers)
        url = f"/api/v1/agents/{agent.json()['id']}"
        for name in ("v2", "v3"):
            assert (await client.patch(url, json={"name": name}, headers=headers)).is_success
        return f"{url}/versions", [3, 2, 1]  # newest first
    if kind == "documents":
        kb = await client.post(KBS, json={"name": "Docs"}, headers=headers)
        path = f"{KBS}/{kb.json()['id']}/documents"
        for n in range(3):
            body = {"text": f"Document number {n}.", "filename": f"{n}.txt"}
            ids.append((await client.post(path, json=body, headers=headers)).json()["id"])
        return path, ids  # oldest first
    path, body = {
        "knowledge-bases": (KBS, {"name": "KB"}),
        "providers": ("/api/v1/providers", {"kind": "openai", "name": "P", "base_url": NOWHERE}),
        "mcp-servers": ("/api/v1/mcp-servers", {"name": "M", "url": f"{NOWHERE}/mcp"}),
    }[kind]
    for _ in range(3):
        created = await client.post(path, json=body, headers=headers)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return path, (ids[::-1] if kind == "knowledge-bases" else ids)  # KBs: newest first


def key_of(item: dict):
    return item.get("version", item.get("id"))


TEMPLATES = {
    "knowledge-bases": KBS,
    "documents": f"{KBS}/{{kb_id}}/documents",
    "providers": "/api/v1/providers",
    "mcp-servers": "/api/v1/mcp-servers",
    "versions": "/api/v1/agents/{agent_id}/versions",
    "agents": "/api/v1/agents",
}
KINDS = [kind for kind in TEMPLATES if kind != "agents"]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_list_is_paged_with_limit_and_cursor(agents_private, headers, kind):
    path, expected = await make_three(agents_private, headers, kind)
    first = await agents_private.get(path, params={"limit": 2}, headers=headers)
    assert first.status_code == 200, first.text
    page = first.json()
    assert set(page) == {"items", "next_cursor"} and page["next_cursor"]
    items = [key_of(i) for i in page["items"] if i.get("id") != "offline"]
    assert len(items) == 2
    second = await agents_private.get(
        path, params={"limit": 2, "cursor": page["next_cursor"]}, headers=headers
    )
    assert second.status_code == 200, second.text
    assert second.json()["next_cursor"] is None
    items += [key_of(i) for i in second.json()["items"]]
    assert items == expected
    everything = (await agents_private.get(path, headers=headers)).json()
    assert everything["next_cursor"] is None  # the default limit (20) holds all three
    too_many = await agents_private.get(path, params={"limit": 101}, headers=headers)
    assert too_many.status_code == 422


def cursor_of(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_CURSORS = [
    "nonsense!",
    "0" * 100,
    cursor_of({"not": "a list"}),
    cursor_of(["2026-01-01T00:00:00+00:00"]),
    cursor_of(["not a time", "not a uuid"]),
    cursor_of(["2026-01-01T00:00:00", str(uuid.uuid4())]),  # no time zone
    cursor_of([2**70, str(uuid.uuid4())]),
    cursor_of([2**70]),
    cursor_of(["7"]),
]


@pytest.mark.parametrize("kind", [*KINDS, "agents"])
async def test_a_cursor_not_given_out_is_a_documented_400(agents_private, headers, kind):
    if kind == "agents":
        path = "/api/v1/agents"
    else:
        path, _ = await make_three(agents_private, headers, kind)
    for cursor in BAD_CURSORS:
        response = await agents_private.get(path, params={"cursor": cursor}, headers=headers)
        assert response.status_code == 400, (cursor, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/invalid-cursor")
    document = (await agents_private.get("/openapi.json")).json()
    assert "400" in document["paths"][TEMPLATES[kind]]["get"]["responses"]


async def test_listing_documents_never_loads_their_bytes(agents_private, headers):
    kb = (await agents_private.post(KBS, json={"name": "Big"}, headers=headers)).json()
    path = f"{KBS}/{kb['id']}/documents"
    big = "All work and no play. " * 1000  # 22 kB of uploaded bytes
    document = (await agents_private.post(path, json={"text": big}, headers=headers)).json()
    for _ in range(600):  # indexed: the ingest (which reads the bytes) is done
        if document["status"] in ("ready", "failed"):
            break
        await asyncio.sleep(0.1)
        document = (await agents_private.get(f"{path}/{document['id']}", headers=headers)).json()
    statements: list[str] = []
    engine = agents_private.app.state.runtime.engine.sync_engine

    def on_execute(conn, cursor, statement, *args):
        if "documents" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        listing = await agents_private.get(path, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert listing.status_code == 200 and listing.json()["items"][0]["size_bytes"] == len(big)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert selects, statements
    for statement in selects:
        assert "documents.raw" not in statement, statement

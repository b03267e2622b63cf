"""Knowledge bases: re-indexing, embedding choices, and chat's search RPC."""

from __future__ import annotations

import json
import uuid

import httpx
import nats
import pytest

from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN

KBS = "/api/v1/knowledge-bases"
TEXT = (
    "Refunds are paid back to the original card within five business days.\n\n"
    "Parcels ship from our warehouse in Lyon every weekday before noon."
)


async def ready_all(agents, headers, kb_id) -> list[dict]:
    import asyncio

    for _ in range(300):
        documents = (await agents.get(f"{KBS}/{kb_id}/documents", headers=headers)).json()["items"]
        if documents and all(d["status"] in ("ready", "failed") for d in documents):
            return documents
        await asyncio.sleep(0.1)
    raise AssertionError(f"documents not indexed: {documents}")


@pytest.fixture
async def indexed(agents, token_issuer):
    owner = uuid.uuid4()
    headers = token_issuer.headers(owner)
    kb = (await agents.post(KBS, json={"name": "Policies"}, headers=headers)).json()
    await agents.post(
        f"{KBS}/{kb['id']}/documents", json={"text": TEXT, "filename": "p.txt"}, headers=headers
    )
    await ready_all(agents, headers, kb["id"])
    return owner, headers, kb


async def test_rechunking_reindexes_every_document(agents, indexed):
    _, headers, kb = indexed
    before = (await ready_all(agents, headers, kb["id"]))[0]
    assert before["chunk_count"] == 1
    patched = await agents.patch(
        f"{KBS}/{kb['id']}", json={"chunk_size": 100, "chunk_overlap": 0}, headers=headers
    )
    assert patched.status_code == 200 and patched.json()["chunk_size"] == 100
    after = (await ready_all(agents, headers, kb["id"]))[0]
    assert after["status"] == "ready" and after["chunk_count"] == 2
    renamed = await agents.patch(f"{KBS}/{kb['id']}", json={"name": "Rules"}, headers=headers)
    assert renamed.json()["name"] == "Rules"
    bad = await agents.patch(f"{KBS}/{kb['id']}", json={"chunk_overlap": 500}, headers=headers)
    assert bad.status_code == 422
    again = await agents.post(f"{KBS}/{kb['id']}/reindex", headers=headers)
    assert again.status_code == 202 and again.json()[0]["status"] in (
        "pending",
        "indexing",
        "ready",
    )
    assert (await ready_all(agents, headers, kb["id"]))[0]["status"] == "ready"


async def test_embedding_choices_are_validated(agents, token_issuer):
    headers = token_issuer.headers()
    other = token_issuer.headers()
    wide = await agents.post(KBS, json={"name": "x", "dimension": 768}, headers=headers)
    assert wide.status_code == 422 and wide.json()["field"] == "dimension"
    named = await agents.post(KBS, json={"name": "x", "embedding_model": "e5"}, headers=headers)
    assert named.status_code == 422 and named.json()["field"] == "embedding_model"
    provider = await agents.post(
        "/api/v1/providers",
        json={"kind": "openai", "name": "p", "base_url": "http://emb:1/v1", "api_key": "sk-1234"},
        headers=other,
    )
    body = {"name": "x", "embedding_provider_id": provider.json()["id"], "embedding_model": "m"}
    stolen = await agents.post(KBS, json=body, headers=headers)
    assert stolen.status_code == 422 and stolen.json()["field"] == "embedding_provider_id"
    mine = await agents.post(KBS, json=body, headers=other)
    assert mine.status_code == 201 and mine.json()["embedding_model"] == "m"


async def test_search_rpc_checks_the_callers_ownership(agents, indexed, nats_url):
    owner, _, kb = indexed
    nc = await nats.connect(nats_url)

    async def ask(body: dict, token: str | None = TEST_INTERNAL_TOKEN) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        reply = await nc.request(
            "agents.rpc.knowledge.search", json.dumps(body).encode(), timeout=10, headers=headers
        )
        return json.loads(reply.data)

    try:
        call = {"user_id": str(owner), "knowledge_base_ids": [kb["id"]], "query": "refund money"}
        answer = await ask(call)
        assert answer["results"][0]["content"].startswith("Refunds are paid")
        assert answer["results"][0]["filename"] == "p.txt"
        assert await ask(call, token=None) == {"error": "unauthorized"}
        stranger = {**call, "user_id": str(uuid.uuid4())}
        assert (await ask(stranger))["error"] == "not_found"
        assert (await ask({**call, "top_k": 0}))["error"] == "bad_request"
    finally:
        await nc.close()


async def test_a_remote_openai_compatible_embedding_model(agents_with, token_issuer):
    from agentmesh.shared.testing.openai_server import FakeOpenAI

    headers = token_issuer.headers()
    async with (
        FakeOpenAI() as server,
        agents_with(allowed_private_hosts=[httpx.URL(server.base_url).netloc.decode()]) as agents,
    ):
        provider = await agents.post(
            "/api/v1/providers",
            headers=headers,
            json={
                "kind": "openai",
                "name": "emb",
                "base_url": server.base_url,
                "api_key": server.api_key,
            },
        )
        body = {
            "name": "Remote",
            "embedding_provider_id": provider.json()["id"],
            "embedding_model": "text-embedding-3-small",
        }
        kb = (await agents.post(KBS, json=body, headers=headers)).json()
        await agents.post(
            f"{KBS}/{kb['id']}/documents", headers=headers, json={"text": TEXT, "filename": "p.txt"}
        )
        document = (await ready_all(agents, headers, kb["id"]))[0]
        assert document["status"] == "ready", document
        found = await agents.post(
            f"{KBS}/{kb['id']}/search", headers=headers, json={"query": "refund", "mode": "vector"}
        )
        assert found.status_code == 200 and found.json()["results"]
        calls = [r for r in server.requests if r.path.endswith("/embeddings")]
        assert calls and all(r.authorized for r in calls)
        assert calls[0].body["model"] == "text-embedding-3-small"
        assert calls[0].body["dimensions"] == 384
        # Back to the local model: the remote vectors go, every document is re-indexed.
        patched = await agents.patch(
            f"{KBS}/{kb['id']}", headers=headers, json={"embedding_provider_id": None}
        )
        assert patched.json()["embedding_model"] == "all-MiniLM-L6-v2"
        assert (await ready_all(agents, headers, kb["id"]))[0]["status"] == "ready"
        assert len([r for r in server.requests if r.path.endswith("/embeddings")]) == len(calls)

"""Knowledge bases: upload, background indexing, dedup, search modes, filters, ownership."""

from __future__ import annotations

import asyncio
import uuid

import pytest

KBS = "/api/v1/knowledge-bases"
HANDBOOK = """# Handbook

## Refunds
Customers may ask for a refund within 30 days of purchase. Refunds go back to the
original payment method within five business days.

## Shipping
Parcels leave our warehouse in Lyon every weekday. International delivery takes up to
ten days.

## Security
Passwords are hashed with Argon2id and API keys are shown only once.
"""


async def ready(agents, headers, kb_id, document_id) -> dict:
    for _ in range(300):
        document = (
            await agents.get(f"{KBS}/{kb_id}/documents/{document_id}", headers=headers)
        ).json()
        if document["status"] in ("ready", "failed"):
            return document
        await asyncio.sleep(0.1)
    raise AssertionError(f"document stuck in {document['status']}")


@pytest.fixture
async def kb(agents, token_issuer):
    headers = token_issuer.headers()
    created = await agents.post(
        KBS, json={"name": "Docs", "chunk_size": 200, "chunk_overlap": 20}, headers=headers
    )
    assert created.status_code == 201, created.text
    return headers, created.json()


async def test_upload_index_and_search_every_mode(agents, kb, outbox_events):
    headers, base = kb
    assert base["embedding_model"] == "all-MiniLM-L6-v2" and base["dimension"] == 384
    upload = await agents.post(
        f"{KBS}/{base['id']}/documents",
        json={"text": HANDBOOK, "filename": "handbook.md"},
        headers=headers,
    )
    assert upload.status_code == 202 and upload.json()["status"] == "pending"
    document = await ready(agents, headers, base["id"], upload.json()["id"])
    assert document["status"] == "ready" and document["chunk_count"] >= 3
    for mode in ("hybrid", "vector", "keyword"):
        found = await agents.post(
            f"{KBS}/{base['id']}/search",
            headers=headers,
            json={"query": "money back refund", "top_k": 2, "mode": mode},
        )
        assert found.status_code == 200, found.text
        top = found.json()["results"][0]
        assert "refund" in top["content"].lower(), (mode, top)
        assert top["document_id"] == document["id"] and top["filename"] == "handbook.md"
        assert top["headings"].get("h2") == "Refunds"
    semantic = await agents.post(
        f"{KBS}/{base['id']}/search",
        headers=headers,
        json={"query": "how are credentials protected", "mode": "vector"},
    )
    assert "Argon2id" in semantic.json()["results"][0]["content"]
    [event] = await outbox_events("agents.knowledge.document.indexed", document["id"])
    assert event["data"]["status"] == "ready"
    assert event["data"]["chunk_count"] == document["chunk_count"]


async def test_same_content_is_not_embedded_twice(agents, kb):
    headers, base = kb
    body = {"text": "Only once, please.", "filename": "once.txt"}
    first = await agents.post(f"{KBS}/{base['id']}/documents", json=body, headers=headers)
    await ready(agents, headers, base["id"], first.json()["id"])
    again = await agents.post(f"{KBS}/{base['id']}/documents", json=body, headers=headers)
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    listing = (await agents.get(f"{KBS}/{base['id']}/documents", headers=headers)).json()["items"]
    assert len(listing) == 1


async def test_file_types_and_failures(agents, kb):
    headers, base = kb
    url = f"{KBS}/{base['id']}/documents"
    html = b"<html><head><style>x{}</style></head><body><h1>Title</h1><p>Hello pages</p></body>"
    files = {
        "txt": ("notes.txt", b"plain text notes", "text/plain"),
        "html": ("page.html", html, "text/html"),
    }
    for name, (filename, content, media) in files.items():
        response = await agents.post(
            url, files={"file": (filename, content, media)}, headers=headers
        )
        assert response.status_code == 202, (name, response.text)
        document = await ready(agents, headers, base["id"], response.json()["id"])
        assert document["status"] == "ready", document
    corrupt = await agents.post(
        url,
        files={"file": ("broken.pdf", b"%PDF-1.4 not really", "application/pdf")},
        headers=headers,
    )
    failed = await ready(agents, headers, base["id"], corrupt.json()["id"])
    assert failed["status"] == "failed" and failed["error"]
    exe = await agents.post(
        url, files={"file": ("tool.exe", b"MZ", "application/octet-stream")}, headers=headers
    )
    assert exe.status_code == 415
    found = await agents.post(
        f"{KBS}/{base['id']}/search",
        headers=headers,
        json={"query": "hello pages", "mode": "keyword"},
    )
    assert "style" not in found.json()["results"][0]["content"]


async def test_filtered_search_still_returns_top_k(agents, kb):
    headers, base = kb
    url = f"{KBS}/{base['id']}/documents"
    ids = []
    # Many more red chunks than blue, so an unfiltered top 5 would be mostly red.
    for team, notes in (("red", 60), ("blue", 14)):
        text = "\n\n".join(
            f"Note {i} of the {team} team about planning the roadmap, hiring and budget."
            for i in range(notes)
        )
        response = await agents.post(
            url,
            json={"text": text, "filename": f"{team}.txt", "metadata": {"team": team}},
            headers=headers,
        )
        ids.append(response.json()["id"])
        await ready(agents, headers, base["id"], response.json()["id"])
    found = await agents.post(
        f"{KBS}/{base['id']}/search",
        headers=headers,
        json={"query": "planning notes", "top_k": 5, "mode": "vector", "filter": {"team": "blue"}},
    )
    results = found.json()["results"]
    assert len(results) == 5
    assert {r["document_id"] for r in results} == {ids[1]}


async def test_deleting_a_document_removes_its_chunks_and_kbs_are_private(agents, kb, token_issuer):
    headers, base = kb
    upload = await agents.post(
        f"{KBS}/{base['id']}/documents",
        json={"text": HANDBOOK, "filename": "h.md"},
        headers=headers,
    )
    await ready(agents, headers, base["id"], upload.json()["id"])
    stranger = token_issuer.headers()
    for method, path in (("GET", ""), ("POST", "/search"), ("GET", "/documents"), ("DELETE", "")):
        body = {"query": "refund"} if path == "/search" else None
        response = await agents.request(
            method, f"{KBS}/{base['id']}{path}", json=body, headers=stranger
        )
        assert response.status_code == 404, (method, path)
    agent = {"name": "Bot", "knowledge_base_ids": [base["id"]]}
    assert (await agents.post("/api/v1/agents", json=agent, headers=headers)).status_code == 201
    assert (await agents.post("/api/v1/agents", json=agent, headers=stranger)).status_code == 422
    deleted = await agents.delete(
        f"{KBS}/{base['id']}/documents/{upload.json()['id']}", headers=headers
    )
    assert deleted.status_code == 204
    found = await agents.post(
        f"{KBS}/{base['id']}/search", headers=headers, json={"query": "refund"}
    )
    assert found.json()["results"] == []


async def test_bad_input_is_a_clear_error(agents, kb):
    headers, base = kb
    assert (
        await agents.post(
            KBS, json={"name": "x", "chunk_size": 100, "chunk_overlap": 100}, headers=headers
        )
    ).status_code == 422
    assert (
        await agents.post(f"{KBS}/{base['id']}/search", json={"query": ""}, headers=headers)
    ).status_code == 422
    assert (
        await agents.post(
            f"{KBS}/{base['id']}/documents",
            content=b"{not json",
            headers={**headers, "content-type": "application/json"},
        )
    ).status_code == 422
    assert (await agents.get(f"{KBS}/{uuid.uuid4()}", headers=headers)).status_code == 404

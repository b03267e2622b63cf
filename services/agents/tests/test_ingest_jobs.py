"""Ingestion as a durable job: leases and takeover, fair claims, embedding generations,
progress, the per-document time limit, and an event loop that keeps answering."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from agentmesh.agents.app import create_app
from agentmesh.agents.knowledge import jobs
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)
from agentmesh.shared.testing.pdf import filler_pages, text_pdf

KBS = "/api/v1/knowledge-bases"
HANDBOOK = "# Handbook\n\n## Refunds\nRefunds within 30 days.\n\n## Shipping\nFrom Lyon.\n" * 3


@pytest.fixture
def make_agents(common_settings, token_issuer):
    """``async with make_agents(**settings) as client``: an agents replica (app + client)."""
    common = common_settings.model_copy(update={"jwks_url": token_issuer.jwks_url})

    @contextlib.asynccontextmanager
    async def make(**overrides):
        settings = AgentsSettings(
            common=common,
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
            **overrides,
        )
        app = create_app(settings)
        async with app_client(app) as client:
            client.app = app
            yield client

    return make


async def quiet_queue(client) -> None:
    """Documents earlier tests left queued (one database for the session) would be claimed
    too; they are not this test's."""
    async with client.app.state.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "UPDATE agents.documents SET status = 'failed', error = 'left by an earlier test',"
                " lease_owner = NULL WHERE status IN ('pending', 'indexing')"
            )
        )


async def new_kb(client, headers, **fields) -> str:
    created = await client.post(KBS, json={"name": "Jobs", **fields}, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def upload(client, headers, kb_id, body: str, filename: str = "doc.md") -> str:
    body_json = {"text": body, "filename": filename}
    response = await client.post(f"{KBS}/{kb_id}/documents", json=body_json, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def document(client, headers, kb_id, document_id) -> dict:
    response = await client.get(f"{KBS}/{kb_id}/documents/{document_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def settled(client, headers, kb_id, document_id) -> dict:
    for _ in range(600):
        found = await document(client, headers, kb_id, document_id)
        if found["status"] in ("ready", "failed"):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"document stuck in {found['status']}")


async def until_indexing(client, headers, kb_id, document_id) -> None:
    for _ in range(3000):
        if (await document(client, headers, kb_id, document_id))["status"] == "indexing":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never claimed")


def claim(client, worker: str, *, slots: int = 5, per_user: int = 5) -> list[jobs.Job]:
    return jobs.claim(
        client.app.state.sessionmaker, worker, slots=slots, per_user=per_user, lease_seconds=60
    )


async def test_a_live_lease_is_kept_and_an_expired_one_taken_over(make_agents, token_issuer):
    headers = token_issuer.headers()
    async with make_agents(ingest_concurrency=0) as api:  # an API-only replica
        await quiet_queue(api)
        kb_id = await new_kb(api, headers)
        doc_id = await upload(api, headers, kb_id, HANDBOOK)
        [dead] = await claim(api, "replica-that-dies")
        assert str(dead.document_id) == doc_id
        assert await claim(api, "live-replica") == []  # a live lease is not taken
        assert (await document(api, headers, kb_id, doc_id))["status"] == "indexing"
        async with make_agents(ingest_poll_seconds=0.1) as live:  # a replica with a worker
            assert (await document(live, headers, kb_id, doc_id))["status"] == "indexing"
            # The dead replica's lease runs out.
            async with api.app.state.sessionmaker() as session, session.begin():
                await session.execute(
                    text(
                        "UPDATE agents.documents SET lease_expires_at = now() - interval '1 second'"
                        " WHERE id = :id"
                    ),
                    {"id": doc_id},
                )
            found = await settled(live, headers, kb_id, doc_id)
            assert found["status"] == "ready" and found["chunk_count"] >= 1, found
        # The dead replica comes back: the job is not its own any more, it writes nothing.
        sessionmaker, outbox = api.app.state.sessionmaker, api.app.state.outbox
        assert not await jobs.heartbeat(sessionmaker, "replica-that-dies", dead, 60)
        assert not await jobs.finish_failed(sessionmaker, outbox, "replica-that-dies", dead, "x")
        assert (await document(api, headers, kb_id, doc_id))["status"] == "ready"


async def test_claims_take_owners_in_turn_within_the_per_user_cap(make_agents, token_issuer):
    busy, other = token_issuer.headers(), token_issuer.headers()
    async with make_agents(ingest_concurrency=0) as api:
        await quiet_queue(api)
        busy_kb, other_kb = await new_kb(api, busy), await new_kb(api, other)
        # One user queues five documents before the other queues one.
        queued = [await upload(api, busy, busy_kb, f"Busy document {i}.") for i in range(5)]
        lone = await upload(api, other, other_kb, "The other user's document.")
        first = await claim(api, "replica-1", slots=3, per_user=1)
        assert {str(j.document_id) for j in first} == {queued[0], lone}
        assert await claim(api, "replica-2", slots=3, per_user=1) == []  # both at their cap
        second = await claim(api, "replica-2", slots=3, per_user=2)
        assert [str(j.document_id) for j in second] == [queued[1]]
        for headers, kb_id in ((busy, busy_kb), (other, other_kb)):
            assert (await api.delete(f"{KBS}/{kb_id}", headers=headers)).status_code == 204


async def test_chunks_of_an_older_generation_are_refused(make_agents, token_issuer):
    headers = token_issuer.headers()
    async with make_agents(ingest_concurrency=0) as api:
        await quiet_queue(api)
        kb_id = await new_kb(api, headers, chunk_size=200, chunk_overlap=20)
        doc_id = await upload(api, headers, kb_id, HANDBOOK)
        [job] = await claim(api, "replica-1")
        # A re-index (here: new chunking) while the job is indexing.
        patched = await api.patch(f"{KBS}/{kb_id}", json={"chunk_size": 300}, headers=headers)
        assert patched.status_code == 200, patched.text
        sessionmaker, outbox = api.app.state.sessionmaker, api.app.state.outbox
        pieces = [("Refunds within 30 days.", {"h2": "Refunds"})]
        vectors = np.full((1, 384), 0.05, dtype=np.float32)
        assert not await jobs.finish_ready(sessionmaker, outbox, "replica-1", job, pieces, vectors)
        found = await document(api, headers, kb_id, doc_id)
        assert found["status"] == "pending" and found["chunk_count"] == 0
        # Whatever path writes them, the database refuses chunks of the old generation.
        insert = text(
            "INSERT INTO agents.chunks (document_id, knowledge_base_id, position, content,"
            " headings, embedding, generation) VALUES (:doc, :kb, 0, 'x', '{}', :vector, :gen)"
        )
        vector = "[" + ",".join(["0.05"] * 384) + "]"
        async with sessionmaker() as session:
            with pytest.raises(DBAPIError, match="older embedding generation"):
                await session.execute(
                    insert, {"doc": doc_id, "kb": kb_id, "vector": vector, "gen": job.generation}
                )
        async with sessionmaker() as session, session.begin():
            await session.execute(
                insert, {"doc": doc_id, "kb": kb_id, "vector": vector, "gen": job.generation + 1}
            )
            await session.rollback()
        assert (await api.delete(f"{KBS}/{kb_id}", headers=headers)).status_code == 204


async def test_reindex_during_an_ingest_leaves_one_generation(make_agents, token_issuer):
    headers = token_issuer.headers()
    async with make_agents(ingest_poll_seconds=0.1) as agents:
        await quiet_queue(agents)
        kb_id = await new_kb(agents, headers, chunk_size=200, chunk_overlap=20)
        body = "\n\n".join(
            f"Paragraph {i} about refunds, parcels and invoices." for i in range(150)
        )
        doc_id = await upload(agents, headers, kb_id, body)
        await until_indexing(agents, headers, kb_id, doc_id)
        patched = await agents.patch(f"{KBS}/{kb_id}", json={"chunk_size": 400}, headers=headers)
        assert patched.status_code == 200
        found = await settled(agents, headers, kb_id, doc_id)
        assert found["status"] == "ready"
        async with agents.app.state.sessionmaker() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT c.generation, k.embedding_generation,"
                        " max(length(c.content)), count(*)"
                        " FROM agents.chunks c"
                        " JOIN agents.knowledge_bases k ON k.id = c.knowledge_base_id"
                        " WHERE c.document_id = :id GROUP BY 1, 2"
                    ),
                    {"id": doc_id},
                )
            ).all()
        [(generation, current, longest, count)] = rows
        assert generation == current == 2 and count == found["chunk_count"]
        assert longest > 200  # split with the new chunking


async def test_documents_show_progress_while_indexing(agents, token_issuer):
    headers = token_issuer.headers()
    kb_id = await new_kb(agents, headers, chunk_size=100, chunk_overlap=0)
    body = "\n\n".join(f"Note {i}: the parcel left the warehouse on time." for i in range(300))
    doc_id = await upload(agents, headers, kb_id, body)
    seen = []
    while (found := await document(agents, headers, kb_id, doc_id))["status"] not in (
        "ready",
        "failed",
    ):
        if found["status"] == "indexing":
            seen.append((found["chunks_done"], found["chunks_total"]))
        await asyncio.sleep(0.01)
    assert found["status"] == "ready", found
    total = found["chunk_count"]
    assert total > 64 and found["chunks_done"] == found["chunks_total"] == total
    assert any(t == total and done < total for done, t in seen), seen
    assert all(t in (None, total) and done <= total for done, t in seen), seen
    [listed] = (await agents.get(f"{KBS}/{kb_id}/documents", headers=headers)).json()["items"]
    assert listed["chunks_done"] == listed["chunks_total"] == total


async def test_a_document_over_the_time_limit_fails_and_the_worker_goes_on(
    make_agents, token_issuer
):
    headers = token_issuer.headers()
    async with make_agents(ingest_document_timeout_seconds=3, ingest_poll_seconds=0.1) as agents:
        await quiet_queue(agents)
        kb_id = await new_kb(agents, headers, chunk_size=100, chunk_overlap=0)
        huge = "\n\n".join(f"Sentence {i} of a very long upload." for i in range(120_000))
        doc_id = await upload(agents, headers, kb_id, huge)
        found = await settled(agents, headers, kb_id, doc_id)
        assert found["status"] == "failed"
        assert "3 s limit" in found["error"] and "TIMEOUT_SECONDS" in found["error"]
        # The overrunning process was killed; the slot starts another for the next document.
        small = await upload(agents, headers, kb_id, HANDBOOK)
        assert (await settled(agents, headers, kb_id, small))["status"] == "ready"


async def test_requests_are_answered_while_a_big_pdf_is_parsed(make_agents, token_issuer):
    headers = token_issuer.headers()
    async with make_agents(ingest_concurrency=1, ingest_poll_seconds=0.1) as agents:
        await quiet_queue(agents)
        kb_id = await new_kb(agents, headers, chunk_size=8000, chunk_overlap=0)
        # Warm the worker process, so what follows is the parse, not the process start.
        warm = await upload(agents, headers, kb_id, HANDBOOK)
        assert (await settled(agents, headers, kb_id, warm))["status"] == "ready"
        pdf = text_pdf(filler_pages(1_500_000))
        files = {"file": ("big.pdf", pdf, "application/pdf")}
        response = await agents.post(f"{KBS}/{kb_id}/documents", headers=headers, files=files)
        assert response.status_code == 202, response.text
        doc_id = response.json()["id"]
        for _ in range(6000):  # until the worker has claimed it: parsing, not yet split
            found = await document(agents, headers, kb_id, doc_id)
            if found["status"] != "pending":
                break
            await asyncio.sleep(0.005)
        assert (found["status"], found["chunks_total"]) == ("indexing", None), found
        # The parse has begun; another request is answered, and the parse is still going
        # on after it (the answer did not wait for the parse to end).
        listed = await agents.get("/api/v1/agents", headers=headers)
        assert listed.status_code == 200
        after = await document(agents, headers, kb_id, doc_id)
        assert (after["status"], after["chunks_total"]) == ("indexing", None), after
        assert (await agents.delete(f"{KBS}/{kb_id}", headers=headers)).status_code == 204


async def test_a_stopping_replica_hands_its_documents_back(make_agents, token_issuer):
    headers = token_issuer.headers()
    async with make_agents(ingest_concurrency=0) as api:
        await quiet_queue(api)
        kb_id = await new_kb(api, headers, chunk_size=100, chunk_overlap=0)
        body = "\n\n".join(f"Line {i} of a document that takes a while." for i in range(3000))
        doc_id = await upload(api, headers, kb_id, body)
        async with make_agents(ingest_poll_seconds=0.1) as worker:
            await until_indexing(worker, headers, kb_id, doc_id)
        # Stopped mid-document: queued again at once, not after its lease.
        found = await document(api, headers, kb_id, doc_id)
        assert found["status"] == "pending", found
        assert [str(j.document_id) for j in await claim(api, "next-replica")] == [doc_id]
        assert (await api.delete(f"{KBS}/{kb_id}", headers=headers)).status_code == 204


async def test_a_worker_process_still_starting_is_killed_at_exit():
    # A replica stopped while a slot's process is still loading its model used to leave
    # that process running, and the interpreter's exit waited on it.
    from agentmesh.agents.knowledge import worker

    slot = worker._Slot(nice=0)
    starting = asyncio.create_task(slot.start())
    for _ in range(2000):
        processes = list((slot.pool._processes or {}).values()) if slot.pool else []
        if processes and all(p.pid for p in processes):
            break
        await asyncio.sleep(0.005)
    assert processes
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    worker._kill_live_pools()  # what runs at interpreter exit, before the pools are joined
    for process in processes:
        await asyncio.to_thread(process.join, 30)
        assert not process.is_alive()
    assert slot.pool is not None  # only the exit hook stopped it
    assert not worker._live_pools

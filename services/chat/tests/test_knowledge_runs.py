"""Knowledge in runs: ``always`` mode puts the passages found in the prompt (for models
without tools), ``tool`` mode searches when the model calls ``knowledge_search``; both
cite what the model was given, on the event, the stored message and the Responses API.
Documents are really ingested by the agents service (local embeddings, pgvector)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from openai.types.responses import Response

from agentmesh.shared.testing.openai_server import FakeOpenAI

from .conftest import chat_settings
from .test_conversations import parse_sse
from .workspaces import announce_agent, assert_problem, converse

KBS = "/api/v1/knowledge-bases"
CONV = "/api/v1/conversations"
REFUNDS = "Refunds are paid back to the original card within five business days."
SHIPPING = "Parcels ship from our warehouse in Lyon every weekday before noon."


async def knowledge_base(agents, headers) -> tuple[str, dict[str, str]]:
    """A knowledge base with two indexed documents: its id, and document ids by filename."""
    kb = (await agents.post(KBS, json={"name": "Policies"}, headers=headers)).json()
    for text, filename in ((REFUNDS, "refunds.txt"), (SHIPPING, "shipping.txt")):
        added = await agents.post(
            f"{KBS}/{kb['id']}/documents",
            headers=headers,
            json={"text": text, "filename": filename},
        )
        assert added.status_code == 202, added.text
    for _ in range(300):
        documents = (await agents.get(f"{KBS}/{kb['id']}/documents", headers=headers)).json()
        items = documents["items"]
        if len(items) == 2 and all(d["status"] == "ready" for d in items):
            return kb["id"], {d["filename"]: d["id"] for d in items}
        assert all(d["status"] != "failed" for d in items), items
        await asyncio.sleep(0.1)
    raise AssertionError("documents not indexed")


@pytest.fixture
async def policies(agents, token_issuer):
    headers = token_issuer.headers()
    kb_id, documents = await knowledge_base(agents, headers)
    return headers, kb_id, documents


@pytest.fixture
async def recorder():
    """An OpenAI-compatible model that records every request it gets."""
    async with FakeOpenAI(reply="From the passages: five business days.") as server:
        yield server


async def provider(agents, headers, server: FakeOpenAI) -> str:
    created = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={
            "kind": "openai",
            "name": "local",
            "base_url": server.base_url,
            "api_key": server.api_key,
        },
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


def assert_cites(citations: list[dict], documents: dict[str, str], *filenames: str) -> None:
    assert [c["filename"] for c in citations] == list(filenames), citations
    for citation in citations:
        assert set(citation) == {"document_id", "chunk_id", "filename", "position", "score"}
        assert citation["document_id"] == documents[citation["filename"]]
        assert isinstance(citation["chunk_id"], int) and citation["position"] == 0
        assert citation["score"] > 0


async def test_always_mode_gives_a_model_without_tools_the_passages(
    chat, agents, make_agent, policies, recorder
):
    headers, kb_id, documents = policies
    agent = await make_agent(
        headers,
        provider_id=await provider(agents, headers, recorder),
        model="fake-model",
        knowledge_base_ids=[kb_id],
        knowledge={"mode": "always", "top_k": 1},
    )
    assert agent["knowledge"] == {"mode": "always", "top_k": 1, "min_score": None}
    conversation_id, answer = await converse(chat, headers, agent["id"], "How are refunds paid?")
    assert answer.status_code == 200, answer.text
    message = answer.json()
    assert message["content"] == "From the passages: five business days."
    assert_cites(message["citations"], documents, "refunds.txt")
    # The model got the passage in its system message, and no tools to call.
    [request] = recorder.requests
    assert "tools" not in request.body
    system = request.body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You keep things.")
    assert REFUNDS in system["content"] and "[1] refunds.txt" in system["content"]
    assert SHIPPING not in system["content"]  # top_k 1
    assert request.body["messages"][-1] == {"role": "user", "content": "How are refunds paid?"}
    # Stored with the message, and listed with it.
    listed = (await chat.get(f"{CONV}/{conversation_id}/messages", headers=headers)).json()
    [stored] = [m for m in listed["items"] if m["role"] == "assistant"]
    assert stored["citations"] == message["citations"]
    [asked] = [m for m in listed["items"] if m["role"] == "user"]
    assert asked["citations"] == []
    # /v1/chat/completions runs the same way.
    question = {"role": "user", "content": "Shipping days?"}
    completion = await chat.post(
        "/v1/chat/completions", headers=headers, json={"model": agent["id"], "messages": [question]}
    )
    assert completion.status_code == 200, completion.text
    system = recorder.requests[-1].body["messages"][0]["content"]
    assert SHIPPING in system and REFUNDS not in system


async def test_min_score_leaves_weaker_passages_out(chat, make_agent, policies):
    """Hybrid scores fuse the two rankings: only the refunds passage matches the words too."""
    headers, kb_id, documents = policies
    everything = await make_agent(headers, knowledge_base_ids=[kb_id], knowledge={"mode": "always"})
    _, answer = await converse(chat, headers, everything["id"], "When are refunds paid?")
    assert_cites(answer.json()["citations"], documents, "refunds.txt", "shipping.txt")
    scores = [c["score"] for c in answer.json()["citations"]]
    threshold = (scores[0] + scores[1]) / 2
    strict = await make_agent(
        headers, knowledge_base_ids=[kb_id], knowledge={"mode": "always", "min_score": threshold}
    )
    _, answer = await converse(chat, headers, strict["id"], "When are refunds paid?")
    assert_cites(answer.json()["citations"], documents, "refunds.txt")
    nothing = await make_agent(
        headers, knowledge_base_ids=[kb_id], knowledge={"mode": "always", "min_score": 1}
    )
    _, answer = await converse(chat, headers, nothing["id"], "When are refunds paid?")
    assert answer.status_code == 200 and answer.json()["citations"] == []


async def test_the_stream_cites_on_message_completed(chat, make_agent, policies):
    headers, kb_id, documents = policies
    agent = await make_agent(
        headers, knowledge_base_ids=[kb_id], knowledge={"mode": "always", "top_k": 1}
    )
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    streamed = await chat.post(
        f"{CONV}/{conversation['id']}/messages",
        headers=headers,
        json={"content": "refunds?", "stream": True},
    )
    events = parse_sse(streamed.text)
    assert not [e for e in events if e["event"].startswith("tool.")]
    completed = next(e["data"] for e in events if e["event"] == "message.completed")
    assert_cites(completed["citations"], documents, "refunds.txt")
    listed = (await chat.get(f"{CONV}/{conversation['id']}/messages", headers=headers)).json()
    assert listed["items"][-1]["citations"] == completed["citations"]


async def test_tool_mode_cites_what_knowledge_search_returned(chat, make_agent, policies):
    """The default mode: the model (offline) calls the tool; the agent's top_k caps it."""
    headers, kb_id, documents = policies
    agent = await make_agent(headers, knowledge_base_ids=[kb_id], knowledge={"top_k": 1})
    assert agent["knowledge"]["mode"] == "tool"
    _, answer = await converse(chat, headers, agent["id"], "use knowledge_search: refunds")
    message = answer.json()
    [call] = message["tool_calls"]
    assert call["name"] == "knowledge_search" and REFUNDS in call["result"]
    assert SHIPPING not in call["result"]
    assert_cites(message["citations"], documents, "refunds.txt")
    # Without a knowledge search, nothing is cited.
    _, plain = await converse(chat, headers, agent["id"], "Hello there")
    assert plain.json()["tool_calls"] == [] and plain.json()["citations"] == []


async def test_the_responses_api_annotates_the_answer_with_file_citations(
    chat, make_agent, policies
):
    headers, kb_id, documents = policies
    await make_agent(
        headers,
        name="Librarian",
        knowledge_base_ids=[kb_id],
        knowledge={"mode": "always", "top_k": 1},
    )
    body = {"model": "librarian", "input": "How are refunds paid?"}
    created = await chat.post("/v1/responses", headers=headers, json=body)
    assert created.status_code == 200, created.text
    response = Response.model_validate(created.json())  # the openai SDK's own types
    [message] = response.output
    assert message.type == "message"
    [text] = message.content
    assert text.type == "output_text"
    [annotation] = text.annotations
    assert annotation.type == "file_citation"
    assert (annotation.file_id, annotation.filename) == (documents["refunds.txt"], "refunds.txt")
    assert annotation.index == len(text.text)
    stored = await chat.get(f"/v1/responses/{response.id}", headers=headers)
    assert stored.json()["output"] == created.json()["output"]
    # Streamed: the annotation's own event, then the text's end, as OpenAI sends them.
    streamed = await chat.post("/v1/responses", headers=headers, json={**body, "stream": True})
    events = parse_responses_sse(streamed.text)
    kinds = [kind for kind, _ in events]
    added = kinds.index("response.output_text.annotation.added")
    assert added < kinds.index("response.output_text.done")
    # The same answer (the offline model's), so the same annotation.
    stored_annotation = created.json()["output"][0]["content"][0]["annotations"][0]
    assert events[added][1]["annotation"] == stored_annotation
    final = Response.model_validate(events[-1][1]["response"])
    assert final.output[0].content[0].annotations[0].file_id == documents["refunds.txt"]


def parse_responses_sse(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_a_knowledge_base_gone_fails_the_run_clearly(chat, make_agent, policies, agents):
    headers, kb_id, _ = policies
    agent = await make_agent(headers, knowledge_base_ids=[kb_id], knowledge={"mode": "always"})
    deleted = await agents.delete(f"{KBS}/{kb_id}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    _, answer = await converse(chat, headers, agent["id"], "refunds?")
    assert_problem(answer, 409, "knowledge-base-unavailable")


@pytest.fixture
async def lone_chat(common):
    """Chat with the agents service down: nobody answers its RPCs."""
    from agentmesh.chat.app import create_app
    from agentmesh.shared.testing.fixtures import app_client

    app = create_app(chat_settings(common))
    async with app_client(app) as client:
        client.app = app
        yield client


@pytest.fixture
async def nc(nats_url):
    import nats

    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def test_the_agents_service_down_is_said_clearly(lone_chat, nc, token_issuer):
    """``always``: the run fails before the model is called (rather than answer without
    the passages). ``tool``: the tool's result says so to the model, as any tool error."""
    owner = uuid.uuid4()
    headers = token_issuer.headers(owner)
    kb_ids = [str(uuid.uuid4())]
    always = await announce_agent(
        lone_chat, nc, owner, owner, knowledge_base_ids=kb_ids, knowledge={"mode": "always"}
    )
    _, answer = await converse(lone_chat, headers, always, "refunds?")
    problem = assert_problem(answer, 503, "agents-unavailable")
    assert "agents service" in problem["detail"] and "run_id" in problem
    tool = await announce_agent(lone_chat, nc, owner, owner, knowledge_base_ids=kb_ids)
    _, answer = await converse(lone_chat, headers, tool, "use knowledge_search: refunds")
    message = answer.json()
    assert "The agents service did not answer" in message["tool_calls"][0]["result"]
    assert message["citations"] == []


async def test_an_embedding_endpoint_down_fails_the_run_clearly(
    chat, agents, make_agent, token_issuer
):
    """A knowledge base embedded by the user's own endpoint: when that endpoint stops, the
    question cannot be embedded, and the run says so (502) rather than answer blind."""
    headers = token_issuer.headers()
    async with FakeOpenAI() as embedder:
        kb = await agents.post(
            KBS,
            headers=headers,
            json={
                "name": "Remote",
                "embedding_provider_id": await provider(agents, headers, embedder),
                "embedding_model": "text-embedding-3-small",
            },
        )
        kb_id = kb.json()["id"]
        await agents.post(
            f"{KBS}/{kb_id}/documents",
            headers=headers,
            json={"text": REFUNDS, "filename": "refunds.txt"},
        )
        for _ in range(300):
            [document] = (await agents.get(f"{KBS}/{kb_id}/documents", headers=headers)).json()[
                "items"
            ]
            if document["status"] in ("ready", "failed"):
                break
            await asyncio.sleep(0.1)
        assert document["status"] == "ready", document
    agent = await make_agent(headers, knowledge_base_ids=[kb_id], knowledge={"mode": "always"})
    _, answer = await converse(chat, headers, agent["id"], "refunds?")
    problem = assert_problem(answer, 502, "knowledge-search-failed")
    assert "knowledge search failed" in problem["detail"]

"""Runs whose replica stopped: heartbeats keep live runs, a sweep on any replica ends the
others (failed, partial answer kept, budget released, stream ended with run.failed + done).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import AsyncExitStack

import httpx
import nats
import pytest
from sqlalchemy import text

from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.models import new_id
from agentmesh.chat.runs.repository import start_run, this_month
from agentmesh.shared.events.streams import RUNS_STREAM, RUNS_SUBJECT_PREFIX
from agentmesh.shared.testing.fixtures import app_client, serve_app
from agentmesh.shared.testing.openai_server import FakeOpenAI

from .conftest import chat_settings
from .test_conversations import CONV, parse_sse

#: Fast heartbeats: a run without one for 0.6 s counts as orphaned.
FAST = {"run_heartbeat_seconds": 0.2, "heartbeat_seconds": 0.5}
REPLY = " ".join(f"word{i}" for i in range(40))


@pytest.fixture
async def chat(common, agents):
    """This module's chat replica: the conftest's, with fast heartbeats and sweeps."""
    app = create_chat(chat_settings(common, **FAST))
    async with app_client(app) as client:
        client.app = app
        yield client


@pytest.fixture
async def fake_llm():
    async with FakeOpenAI(reply=REPLY, token_delay_seconds=0.05) as server:
        yield server


@pytest.fixture
async def slow_agent(agents, make_agent, token_issuer, fake_llm):
    """A user and an agent on a provider that takes ~2 s to answer."""
    token, user_id = token_issuer.token()
    headers = {"Authorization": f"Bearer {token}"}
    provider = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={
            "kind": "openai",
            "name": "slow",
            "base_url": fake_llm.base_url,
            "api_key": fake_llm.api_key,
        },
    )
    assert provider.status_code == 201, provider.text
    agent = await make_agent(headers, provider_id=provider.json()["id"], model="fake-model")
    return headers, user_id, agent


async def warm_up(chat, headers: dict, agent: dict, fake_llm: FakeOpenAI) -> None:
    """One quick turn first: the first model call of a process imports and builds the
    provider's client, which blocks the event loop these in-process replicas share for
    longer than the test's orphan timeout (separate processes don't have that problem)."""
    delay, fake_llm.token_delay_seconds = fake_llm.token_delay_seconds, 0
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    answer = await chat.post(
        f"{CONV}/{conversation['id']}/messages", headers=headers, json={"content": "warm up"}
    )
    assert answer.status_code == 200, answer.text
    fake_llm.token_delay_seconds = delay


async def sql(chat, statement: str, **params):
    async with chat.app.state.sessionmaker() as session, session.begin():
        result = await session.execute(text(statement), params)
        return result.mappings().all() if result.returns_rows else []


async def test_a_run_whose_replica_died_is_failed_and_its_stream_ended(
    chat, make_agent, token_issuer, nats_url
):
    token, user_id = token_issuer.token()
    headers = {"Authorization": f"Bearer {token}"}
    agent = await make_agent(headers)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    # The user has a budget, and the dead replica's run holds 100 reserved tokens of it.
    await sql(
        chat,
        "INSERT INTO chat.budgets (workspace_id, user_id, monthly_tokens, "
        "updated_at) VALUES (:u, :u, 100000, now())",
        u=user_id,
    )
    await sql(
        chat,
        "INSERT INTO chat.budget_spend (workspace_id, user_id, month, tokens, "
        "cost_usd, reserved_tokens) VALUES (:u, :u, :m, 0, 0, 100)",
        u=user_id,
        m=this_month(),
    )

    # What a replica leaves behind when it dies mid-answer: the question and its running
    # run in the database, the first events in CHAT_RUNS, and nothing else.
    run_id, question_id = new_id(), new_id()  # UUIDv7: time-ordered, as the service's
    async with chat.app.state.sessionmaker() as session, session.begin():
        await start_run(
            session,
            run_id=run_id,
            workspace_id=user_id,
            user_id=user_id,
            agent_id=uuid.UUID(agent["id"]),
            agent_version=1,
            model="offline",
            reserved=100,
            conversation_id=uuid.UUID(conversation["id"]),
            user_message=(question_id, None, "Say hello"),
            user_message_id=question_id,
        )
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = f"{RUNS_SUBJECT_PREFIX}{run_id}"
        streamed = [
            ("run.started", {"run_id": str(run_id)}),
            ("message.delta", {"delta": "Hello"}),
            ("message.delta", {"delta": ", wor"}),
        ]
        for number, (kind, data) in enumerate(streamed, start=1):
            body = json.dumps({"id": number, "type": kind, "data": data}).encode()
            await js.publish(
                subject, body, stream=RUNS_STREAM, headers={"Nats-Msg-Id": f"{run_id}:{number}"}
            )
    finally:
        await nc.close()
    await sql(
        chat,
        "UPDATE chat.runs SET heartbeat_at = now() - interval '1 hour' WHERE id = :id",
        id=run_id,
    )

    # A client that saw the run start follows it on a live replica: it gets the rest.
    response = await asyncio.wait_for(
        chat.get(f"/api/v1/runs/{run_id}/events", headers={**headers, "Last-Event-ID": "1"}),
        timeout=20,
    )
    events = parse_sse(response.text)
    assert [(e["id"], e["event"]) for e in events] == [
        (2, "message.delta"),
        (3, "message.delta"),
        (4, "run.failed"),
        (5, "done"),
    ]
    assert events[2]["data"]["type"].endswith("/run-interrupted")
    assert events[2]["data"]["detail"] == "The chat replica running this answer stopped; ask again."
    assert events[3]["data"] == {"status": "failed"}

    run = (await chat.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
    assert run["status"] == "failed" and run["finished_at"] is not None
    assert run["error"]["type"].endswith("/run-interrupted")
    history = (await chat.get(f"{CONV}/{conversation['id']}/messages", headers=headers)).json()
    answer = history["items"][-1]
    assert (answer["role"], answer["status"], answer["content"]) == (
        "assistant",
        "failed",
        "Hello, wor",
    )
    assert answer["id"] == run["assistant_message_id"]
    [spend] = await sql(
        chat, "SELECT reserved_tokens FROM chat.budget_spend WHERE user_id = :u", u=user_id
    )
    assert spend["reserved_tokens"] == 0
    [event] = await sql(
        chat,
        "SELECT envelope FROM chat.outbox WHERE subject = "
        "'chat.message.completed' AND envelope->'data'->>'run_id' = :r",
        r=str(run_id),
    )
    assert event["envelope"]["data"]["status"] == "failed"
    assert event["envelope"]["data"]["message_id"] == answer["id"]

    # A client arriving later (or asking again) gets the same end, once.
    again = await chat.get(
        f"/api/v1/runs/{run_id}/events", headers={**headers, "Last-Event-ID": "3"}
    )
    assert [(e["id"], e["event"]) for e in parse_sse(again.text)] == [
        (4, "run.failed"),
        (5, "done"),
    ]


async def test_heartbeats_keep_a_long_run_alive_on_its_replica(chat, common, slow_agent, fake_llm):
    headers, _, agent = slow_agent
    await warm_up(chat, headers, agent, fake_llm)
    async with AsyncExitStack() as stack:
        # The run takes ~2 s on the first replica, more than three orphan timeouts;
        # the second replica sweeps all along.
        first, _second = [
            await stack.enter_async_context(serve_app(create_chat(chat_settings(common, **FAST))))
            for _ in range(2)
        ]
        async with httpx.AsyncClient(base_url=first, headers=headers, timeout=30) as client:
            conversation = (await client.post(CONV, json={"agent_id": agent["id"]})).json()
            response = await client.post(
                f"{CONV}/{conversation['id']}/messages", json={"content": "talk", "stream": True}
            )
        events = parse_sse(response.text)
        assert [e["event"] for e in events][-2:] == ["message.completed", "done"]
        run_id = response.headers["X-Run-Id"]
    [run] = await sql(
        chat,
        "SELECT status, heartbeat_at - created_at AS beating, finished_at - created_at AS took "
        "FROM chat.runs WHERE id = :id",
        id=run_id,
    )
    assert run["status"] == "completed"
    assert run["took"].total_seconds() > 3 * 0.6  # it outlived the orphan timeout thrice
    assert run["beating"].total_seconds() > 0  # kept alive by heartbeats


async def test_a_late_finish_after_the_sweep_changes_nothing(chat, common, slow_agent):
    """A replica that misses its heartbeats (stalled, cut off from the database) may come
    back: the sweep's record of its run stands, its finish writes nothing."""
    headers, _, agent = slow_agent
    async with AsyncExitStack() as stack:
        stalled = create_chat(chat_settings(common, **FAST))
        url = await stack.enter_async_context(serve_app(stalled))
        await stalled.state.run_watch.stop()  # no more heartbeats from this replica
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            conversation = (await client.post(CONV, json={"agent_id": agent["id"]})).json()
            response = await client.post(
                f"{CONV}/{conversation['id']}/messages", json={"content": "talk", "stream": True}
            )
        run_id = response.headers["X-Run-Id"]
        local = parse_sse(response.text)
        assert [e["event"] for e in local][-2:] == ["run.failed", "done"]
        assert local[-2]["data"]["type"].endswith("/run-interrupted")
    [run] = await sql(chat, "SELECT status, error FROM chat.runs WHERE id = :id", id=run_id)
    assert run["status"] == "failed" and run["error"]["type"].endswith("/run-interrupted")
    messages = await sql(
        chat,
        "SELECT status FROM chat.messages WHERE run_id = :id AND role = 'assistant'",
        id=run_id,
    )
    assert [m["status"] for m in messages] == ["failed"]  # the sweep's, not a second one
    events = await sql(
        chat,
        "SELECT envelope->'data'->>'status' AS status FROM chat.outbox "
        "WHERE envelope->'data'->>'run_id' = :r",
        r=run_id,
    )
    assert [e["status"] for e in events] == ["failed"]

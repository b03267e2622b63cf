"""Runs: a real provider over HTTP, resuming on another replica, cancelling, round trips."""

from __future__ import annotations

import asyncio
import contextvars
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.chat.app import create_app as create_chat
from agentmesh.shared.testing.fixtures import app_client, serve_app
from agentmesh.shared.testing.openai_server import FakeOpenAI

from .conftest import chat_settings
from .test_conversations import CONV, parse_sse

REPLY = " ".join(f"word{i}" for i in range(40))


@pytest.fixture
async def fake_llm():
    async with FakeOpenAI(reply=REPLY) as server:
        yield server


@pytest.fixture
async def remote_agent(agents, make_agent, token_issuer, fake_llm):
    """An agent on an OpenAI-compatible provider (the fake server, over real HTTP)."""
    headers = token_issuer.headers()
    provider = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={
            "kind": "openai",
            "name": "local",
            "base_url": fake_llm.base_url,
            "api_key": fake_llm.api_key,
        },
    )
    assert provider.status_code == 201, provider.text
    agent = await make_agent(headers, provider_id=provider.json()["id"], model="fake-model")
    return headers, agent


@pytest.fixture
async def replicas(common, agents):
    """Two chat replicas over real HTTP on the same Postgres and NATS."""
    async with AsyncExitStack() as stack:
        urls = []
        for _ in range(2):
            app = create_chat(chat_settings(common, heartbeat_seconds=0.5))
            urls.append(await stack.enter_async_context(serve_app(app)))
        yield urls


async def test_a_real_provider_streams_over_http(chat, remote_agent, fake_llm):
    headers, agent = remote_agent
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    response = await chat.post(
        f"{CONV}/{conversation['id']}/messages",
        headers=headers,
        json={"content": "hi", "stream": True},
    )
    events = parse_sse(response.text)
    text = "".join(e["data"]["delta"] for e in events if e["event"] == "message.delta")
    assert text == REPLY
    completed = next(e for e in events if e["event"] == "message.completed")
    assert completed["data"]["usage"]["output_tokens"] > 0
    assert fake_llm.requests[0].authorized and fake_llm.requests[0].body["stream"] is True


async def test_provider_errors_retry_then_fail_cleanly(chat, remote_agent, fake_llm):
    headers, agent = remote_agent
    # Titled: no title request races the turns below for the failures queued on the model.
    conversation = (
        await chat.post(CONV, json={"agent_id": agent["id"], "title": "t"}, headers=headers)
    ).json()
    url = f"{CONV}/{conversation['id']}/messages"
    fake_llm.fail_next("429")
    retried = await chat.post(url, headers=headers, json={"content": "again"})
    assert retried.status_code == 200 and retried.json()["content"] == REPLY
    fake_llm.fail_next("error_after_tokens")
    broken = await chat.post(url, headers=headers, json={"content": "and again", "stream": True})
    kinds = [e["event"] for e in parse_sse(broken.text)]
    assert kinds[-2:] == ["run.failed", "done"] and "message.delta" in kinds
    fake_llm.fail_next("500", times=5)
    failed = await chat.post(url, headers=headers, json={"content": "once more"})
    assert failed.status_code == 502
    assert failed.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in failed.text and fake_llm.api_key not in failed.text


async def test_resume_on_another_replica_with_last_event_id(replicas, remote_agent, fake_llm):
    headers, agent = remote_agent
    fake_llm.token_delay_seconds = 0.03
    first, second = replicas
    async with httpx.AsyncClient(base_url=first, headers=headers, timeout=30) as client:
        conversation = (await client.post(CONV, json={"agent_id": agent["id"]})).json()
        seen: list[dict] = []
        async with client.stream(
            "POST",
            f"{CONV}/{conversation['id']}/messages",
            json={"content": "tell me", "stream": True},
        ) as response:
            run_id = response.headers["X-Run-Id"]
            buffer = ""
            async for chunk in response.aiter_text():
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                seen += parse_sse("\n\n".join(blocks))
                if sum(e["event"] == "message.delta" for e in seen) >= 3:
                    break  # the client drops mid-stream
    last = seen[-1]["id"]
    async with httpx.AsyncClient(base_url=second, headers=headers, timeout=30) as client:
        resumed = await client.get(
            f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(last)}
        )
        rest = parse_sse(resumed.text)
        assert [e["id"] for e in rest] == list(range(last + 1, last + 1 + len(rest)))
        assert rest[-1]["event"] == "done"
        events = seen + rest
        text = "".join(e["data"]["delta"] for e in events if e["event"] == "message.delta")
        assert text == REPLY
        run = (await client.get(f"/api/v1/runs/{run_id}")).json()
        assert run["status"] == "completed" and run["output_tokens"] > 0


async def stream_cancelled_from(
    other: httpx.AsyncClient, client: httpx.AsyncClient, conversation_id: str, *, deltas: int
) -> tuple[str, list[dict]]:
    """Stream a turn through ``client``; after ``deltas`` tokens, cancel it through
    ``other`` (another replica). The run's id and every event the stream carried."""
    events: list[dict] = []
    async with client.stream(
        "POST", f"{CONV}/{conversation_id}/messages", json={"content": "talk", "stream": True}
    ) as response:
        run_id = response.headers["X-Run-Id"]
        buffer, cancelled = "", False
        async for chunk in response.aiter_text():
            buffer += chunk
            *blocks, buffer = buffer.split("\n\n")
            events += parse_sse("\n\n".join(blocks))
            seen = sum(e["event"] == "message.delta" for e in events)
            if seen >= deltas and not cancelled:
                assert (await other.post(f"/api/v1/runs/{run_id}/cancel")).status_code == 202
                cancelled = True
    return run_id, events


async def test_cancel_from_another_replica_keeps_what_was_said(replicas, remote_agent, fake_llm):
    headers, agent = remote_agent
    fake_llm.token_delay_seconds = 0.05
    first, second = replicas
    async with (
        httpx.AsyncClient(base_url=first, headers=headers, timeout=30) as client,
        httpx.AsyncClient(base_url=second, headers=headers, timeout=30) as other,
    ):
        conversation = (await client.post(CONV, json={"agent_id": agent["id"]})).json()
        _, events = await stream_cancelled_from(other, client, conversation["id"], deltas=2)
        kinds = [e["event"] for e in events]
        assert kinds[-2:] == ["run.cancelled", "done"]
        partial = "".join(e["data"]["delta"] for e in events if e["event"] == "message.delta")
        assert partial and partial != REPLY
        history = (await client.get(f"{CONV}/{conversation['id']}/messages")).json()["items"]
        assert history[-1]["status"] == "cancelled" and history[-1]["content"] == partial


async def test_a_cancel_the_running_replica_missed_is_sent_again(
    replicas, remote_agent, fake_llm, monkeypatch
):
    # Core NATS delivers at most once: a replica that misses the cancel (a reconnect, a
    # dropped message) would run on to the end while the API had said 202.
    import agentmesh.chat.app as chat_app
    from agentmesh.chat.runs import router as runs_router

    missed: list[object] = []
    real_cancel_local = chat_app.cancel_local

    def missing_the_first(hub, run_id):
        if hub.local.get(run_id) is not None and not missed:
            missed.append(run_id)  # the running replica's first message is lost
            return False
        return real_cancel_local(hub, run_id)

    monkeypatch.setattr(chat_app, "cancel_local", missing_the_first)
    monkeypatch.setattr(runs_router, "CANCEL_RESEND_SECONDS", (0.2, 0.4, 0.8))
    headers, agent = remote_agent
    fake_llm.token_delay_seconds = 0.1  # 20 tokens: about 2 s in all
    first, second = replicas
    async with (
        httpx.AsyncClient(base_url=first, headers=headers, timeout=30) as client,
        httpx.AsyncClient(base_url=second, headers=headers, timeout=30) as other,
    ):
        body = {"agent_id": agent["id"], "title": "t"}
        conversation = (await client.post(CONV, json=body)).json()
        run_id, events = await stream_cancelled_from(other, client, conversation["id"], deltas=1)
        assert missed, "the running replica never received the first cancel"
        kinds = [e["event"] for e in events]
        assert kinds[-2:] == ["run.cancelled", "done"], kinds
        run = (await client.get(f"/api/v1/runs/{run_id}")).json()
        assert run["status"] == "cancelled"


COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("counting", default=False)


async def test_one_streamed_turn_costs_at_most_ten_round_trips(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    conversation = (
        await chat.post(CONV, json={"agent_id": agent["id"], "title": "Counted"}, headers=headers)
    ).json()
    url = f"{CONV}/{conversation['id']}/messages"
    await chat.post(url, json={"content": "warm up"}, headers=headers)
    statements: list[str] = []
    engine = chat.app.state.runtime.engine.sync_engine

    def on_execute(conn, cursor, statement, *args):
        if COUNTING.get():
            statements.append(statement.split()[0])

    def on_commit(conn):
        if COUNTING.get():
            statements.append("COMMIT")

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    token = COUNTING.set(True)
    try:
        response = await chat.post(
            url, json={"content": "count me", "stream": True}, headers=headers
        )
    finally:
        COUNTING.reset(token)
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)
    assert parse_sse(response.text)[-1]["event"] == "done"
    print(f"\nround trips of one streamed turn: {len(statements)} {statements}")
    assert 0 < len(statements) <= 10


async def test_a_run_whose_row_cannot_be_written_fails_before_any_output(
    chat, make_agent, token_issuer
):
    """The model call starts alongside the commit of the run's row; if that commit fails
    (a real database error here, from a trigger), the run fails before any output."""
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    conversation = (
        await chat.post(CONV, json={"agent_id": agent["id"], "title": "t"}, headers=headers)
    ).json()
    engine = chat.app.state.runtime.engine
    await refuse_runs_of(engine, agent["id"])
    try:
        url = f"{CONV}/{conversation['id']}/messages"
        streamed = await chat.post(url, json={"content": "hi", "stream": True}, headers=headers)
        events = parse_sse(streamed.text)
        assert [e["event"] for e in events] == ["run.failed", "done"], events
        assert events[0]["data"]["type"].endswith("/run-not-recorded")
        answer = await chat.post(url, json={"content": "hi"}, headers=headers)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("/run-not-recorded")
        completion = await chat.post(
            "/v1/chat/completions",
            headers=headers,
            json={"model": agent["id"], "messages": [{"role": "user", "content": "hi"}]},
        )
        assert completion.status_code == 503 and "error" in completion.json()
    finally:
        await allow_runs(engine)
    history = (await chat.get(f"{url}", headers=headers)).json()
    assert history["items"] == []  # neither the questions nor any answer were kept
    ok = await chat.post(url, json={"content": "hi"}, headers=headers)
    assert ok.status_code == 200 and ok.json()["content"]


async def refuse_runs_of(engine, agent_id: str, *, sleep: float = 0.0) -> None:
    """A trigger on chat.runs: inserts of this agent's runs fail (a real database error);
    with ``sleep`` they wait that long instead, then go through."""
    from sqlalchemy import text

    body = (
        f"PERFORM pg_sleep({sleep}); RETURN NEW;" if sleep else "RAISE EXCEPTION 'no runs today';"
    )
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"CREATE OR REPLACE FUNCTION chat.refuse_run() RETURNS trigger "
                f"LANGUAGE plpgsql AS $$ BEGIN {body} END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_run BEFORE INSERT ON chat.runs FOR EACH ROW WHEN "
                f"(NEW.agent_id = '{agent_id}') EXECUTE FUNCTION chat.refuse_run()"
            )
        )


async def allow_runs(engine) -> None:
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(text("DROP TRIGGER IF EXISTS refuse_run ON chat.runs"))
        await conn.execute(text("DROP FUNCTION IF EXISTS chat.refuse_run()"))


async def test_a_failed_commit_shows_nothing_even_if_the_model_answers_later(
    chat, remote_agent, fake_llm
):
    """The commit fails long before the provider's first token: no token may follow."""
    headers, agent = remote_agent
    fake_llm.ttft_seconds = 0.3
    conversation = (
        await chat.post(CONV, json={"agent_id": agent["id"], "title": "t"}, headers=headers)
    ).json()
    engine = chat.app.state.runtime.engine
    await refuse_runs_of(engine, agent["id"])
    try:
        streamed = await chat.post(
            f"{CONV}/{conversation['id']}/messages",
            headers=headers,
            json={"content": "hi", "stream": True},
        )
    finally:
        await allow_runs(engine)
    assert [e["event"] for e in parse_sse(streamed.text)] == ["run.failed", "done"]


async def test_a_question_with_a_nul_character_is_refused_up_front(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    refused = await chat.post(
        f"{CONV}/{conversation['id']}/messages", headers=headers, json={"content": "a\u0000b"}
    )
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"


async def test_a_waiting_answer_holds_no_database_connection(common, remote_agent, fake_llm):
    """One pooled connection: the request's reads, the run's commit and its finish must
    take turns, so no request may keep its connection while the model answers."""
    headers, agent = remote_agent
    fake_llm.ttft_seconds = 0.3
    tight = common.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 2.0}
    )
    app = create_chat(chat_settings(tight))
    async with app_client(app) as client:
        conversation = (
            await client.post(CONV, json={"agent_id": agent["id"], "title": "t"}, headers=headers)
        ).json()
        answers = await asyncio.gather(
            *(
                client.post(
                    f"{CONV}/{conversation['id']}/messages",
                    headers=headers,
                    json={"content": f"question {i}"},
                )
                for i in range(3)
            )
        )
        assert [a.status_code for a in answers] == [200, 200, 200], answers[0].text
        completion = await client.post(
            "/v1/chat/completions",
            headers=headers,
            json={"model": agent["id"], "messages": [{"role": "user", "content": "hi"}]},
        )
        assert completion.status_code == 200, completion.text


async def test_cancel_right_after_the_start_waits_for_the_run_row(
    common, replicas, remote_agent, fake_llm
):
    """The row is committed alongside the model call (slowly here): a cancel sent at once
    still finds the run, and ends it cancelled; a second cancel changes nothing."""
    headers, agent = remote_agent
    fake_llm.ttft_seconds = 2.0
    first, _ = replicas
    async with httpx.AsyncClient(base_url=first, headers=headers, timeout=30) as client:
        conversation = (
            await client.post(CONV, json={"agent_id": agent["id"], "title": "t"})
        ).json()
        engine = create_async_engine(common.database_url)
        await refuse_runs_of(engine, agent["id"], sleep=0.5)
        try:
            async with client.stream(
                "POST",
                f"{CONV}/{conversation['id']}/messages",
                json={"content": "slow", "stream": True},
            ) as response:
                run_id = response.headers["X-Run-Id"]
                cancels = await asyncio.gather(
                    *(client.post(f"/api/v1/runs/{run_id}/cancel") for _ in range(2))
                )
                body = "".join([chunk async for chunk in response.aiter_text()])
        finally:
            await allow_runs(engine)
            await engine.dispose()
        assert [c.status_code for c in cancels] == [202, 202], cancels[0].text
        kinds = [e["event"] for e in parse_sse(body)]
        assert kinds[0] == "run.started" and kinds[-2:] == ["run.cancelled", "done"], kinds
        run = (await client.get(f"/api/v1/runs/{run_id}")).json()
        assert run["status"] == "cancelled"

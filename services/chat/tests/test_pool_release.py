"""The orphan sweep reads a dead run's events from NATS without holding a pooled
connection: with a pool of one, requests are answered while that read is pending."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.models import new_id
from agentmesh.chat.runs.repository import start_run
from agentmesh.shared.testing.fixtures import app_client

from .conftest import chat_settings
from .test_conversations import CONV, parse_sse
from .test_orphans import FAST, sql

#: The most the held NATS read waits to be released (the test releases it sooner).
HOLD_SECONDS = 10


@pytest.fixture
async def chat(common, agents):
    """A chat replica on a pool of exactly one connection, sweeping often."""
    common = common.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 60.0}
    )
    app = create_chat(chat_settings(common, **FAST))
    async with app_client(app) as client:
        client.app = app
        yield client


async def test_the_sweep_holds_no_connection_while_it_reads_nats(
    chat, make_agent, token_issuer, monkeypatch
):
    token, user_id = token_issuer.token()
    headers = {"Authorization": f"Bearer {token}"}
    agent = await make_agent(headers)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    hub = chat.app.state.hub
    read_events = hub.stream_events
    reading, release, held_too_long = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def held_read(run_id, **kwargs):  # the sweep's NATS read, answered only when let
        reading.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), HOLD_SECONDS)
        if not release.is_set():
            held_too_long.set()
        return await read_events(run_id, **kwargs)

    monkeypatch.setattr(hub, "stream_events", held_read)
    run_id, question_id = new_id(), new_id()  # a run whose replica died
    async with chat.app.state.sessionmaker() as session, session.begin():
        await start_run(
            session,
            run_id=run_id,
            workspace_id=user_id,
            user_id=user_id,
            agent_id=uuid.UUID(agent["id"]),
            agent_version=1,
            model="offline",
            reserved=0,
            conversation_id=uuid.UUID(conversation["id"]),
            user_message=(question_id, None, "Say hello"),
            user_message_id=question_id,
        )
    await sql(
        chat,
        "UPDATE chat.runs SET heartbeat_at = now() - interval '1 hour' WHERE id = :id",
        id=run_id,
    )
    await asyncio.wait_for(reading.wait(), 30)

    other = asyncio.create_task(chat.get(CONV, headers=headers))
    timed_out = asyncio.create_task(held_too_long.wait())
    done, _ = await asyncio.wait({other, timed_out}, return_when=asyncio.FIRST_COMPLETED)
    timed_out.cancel()
    assert other in done and not held_too_long.is_set(), "the sweep held the only connection"
    assert other.result().status_code == 200, other.result().text
    release.set()

    # Released, the sweep fails the run as before and ends its stream.
    events = await asyncio.wait_for(chat.get(f"/api/v1/runs/{run_id}/events", headers=headers), 30)
    assert [e["event"] for e in parse_sse(events.text)] == ["run.failed", "done"]
    run = (await chat.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
    assert run["status"] == "failed" and run["error"]["type"].endswith("/run-interrupted")

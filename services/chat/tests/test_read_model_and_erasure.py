"""The agent read-model (versions, stale events, deleted agents) and erasure over JetStream."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import nats
from sqlalchemy import func, select

from agentmesh.chat.models import AgentSnapshot, Budget, BudgetSpend, Conversation, Message, Run
from agentmesh.chat.snapshots.consumer import on_agent_event
from agentmesh.shared.errors import PROBLEM_JSON
from agentmesh.shared.events.contracts import AgentConfig, AgentDeleted, AgentUpdated, UserDeleted
from agentmesh.shared.events.envelope import Envelope
from agentmesh.shared.events.streams import stream_name

CONV = "/api/v1/conversations"


async def snapshot_of(chat, agent_id: str) -> AgentSnapshot | None:
    async with chat.app.state.sessionmaker() as session:
        return await session.get(AgentSnapshot, uuid.UUID(agent_id))


async def eventually(check, timeout: float = 20) -> None:
    """Poll the database (what the consumers write to) until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{check} never held")


async def test_an_update_reaches_the_read_model(chat, agents, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    updated = await agents.patch(
        f"/api/v1/agents/{agent['id']}", json={"instructions": "Be brief."}, headers=headers
    )
    assert updated.status_code == 200 and updated.json()["version"] == 2
    committed = time.perf_counter()
    await eventually(lambda: _has_version(chat, agent["id"], 2))
    lag_ms = (time.perf_counter() - committed) * 1000
    snapshot = await snapshot_of(chat, agent["id"])
    print(f"read-model lag: agents PATCH response -> chat snapshot v2 in {lag_ms:.1f} ms")
    assert snapshot is not None and (snapshot.version, snapshot.deleted) == (2, False)
    assert snapshot.config["instructions"] == "Be brief."
    answer = await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)
    turn = await chat.post(
        f"{CONV}/{answer.json()['id']}/messages", json={"content": "Hi"}, headers=headers
    )
    assert turn.json()["agent_version"] == 2  # new runs use the new version


async def test_an_older_event_is_ignored(chat, agents, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    for change in ({"name": "Second"}, {"name": "Third"}):
        patched = await agents.patch(f"/api/v1/agents/{agent['id']}", json=change, headers=headers)
        assert patched.status_code == 200
    await eventually(lambda: _has_version(chat, agent["id"], 3))
    agent_id, owner_id = uuid.UUID(agent["id"]), uuid.UUID(agent["owner_id"])
    stale = [
        AgentUpdated(
            agent_id=agent_id, owner_id=owner_id, agent_version=2, config=AgentConfig(name="Stale")
        ),
        AgentUpdated(
            agent_id=agent_id,
            owner_id=owner_id,
            agent_version=3,
            config=AgentConfig(name="Same version, replayed"),
        ),
        AgentDeleted(agent_id=agent_id, owner_id=owner_id, agent_version=2),
    ]
    for payload in stale:
        async with chat.app.state.sessionmaker() as session, session.begin():
            await on_agent_event(session, Envelope.wrap(payload, source="agents"), payload)
    snapshot = await snapshot_of(chat, agent["id"])
    assert snapshot is not None
    assert (snapshot.version, snapshot.config["name"], snapshot.deleted) == (3, "Third", False)


async def _has_version(chat, agent_id: str, version: int) -> bool:
    snapshot = await snapshot_of(chat, agent_id)
    return snapshot is not None and snapshot.version >= version


async def test_a_deleted_agent_starts_no_runs(chat, agents, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    deleted = await agents.delete(f"/api/v1/agents/{agent['id']}", headers=headers)
    assert deleted.status_code == 204

    async def is_deleted() -> bool:
        snapshot = await snapshot_of(chat, agent["id"])
        return snapshot is not None and snapshot.deleted

    await eventually(is_deleted)
    turn = await chat.post(
        f"{CONV}/{conversation['id']}/messages", json={"content": "Hi"}, headers=headers
    )
    assert turn.status_code == 409 and turn.headers["content-type"].startswith(PROBLEM_JSON)
    assert turn.json()["type"].endswith("/agent-unavailable")
    created = await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)
    assert created.status_code == 404 and created.headers["content-type"].startswith(PROBLEM_JSON)
    # The conversation and its history are still readable.
    assert (await chat.get(f"{CONV}/{conversation['id']}", headers=headers)).status_code == 200


async def _rows_of(chat, user_id: uuid.UUID) -> dict[str, int]:
    async with chat.app.state.sessionmaker() as session:
        return {
            model.__tablename__: await session.scalar(
                select(func.count()).select_from(model).where(model.user_id == user_id)
            )
            for model in (Conversation, Message, Run, Budget, BudgetSpend)
        }


async def _erasures(chat, user_id: uuid.UUID) -> int:
    outbox = chat.app.state.runtime.tables.outbox
    async with chat.app.state.sessionmaker() as session:
        return await session.scalar(
            select(func.count())
            .select_from(outbox)
            .where(
                outbox.c.subject == "chat.erasure.completed", outbox.c.subject_id == str(user_id)
            )
        )


async def test_user_deleted_erases_chat_data_once(chat, make_agent, token_issuer, nats_url):
    admin = token_issuer.headers(roles=("admin",))
    erased_id, kept_id = uuid.uuid4(), uuid.uuid4()
    for user_id in (erased_id, kept_id):
        headers = token_issuer.headers(user_id)
        agent = await make_agent(headers)
        for _ in range(2):
            conversation = await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)
            turn = await chat.post(
                f"{CONV}/{conversation.json()['id']}/messages",
                json={"content": "Hello"},
                headers=headers,
            )
            assert turn.status_code == 200, turn.text
        budget = await chat.put(
            f"/api/v1/budgets/{user_id}", json={"monthly_tokens": 10**6}, headers=admin
        )
        assert budget.status_code == 200
    kept_before = await _rows_of(chat, kept_id)
    assert all(kept_before.values()) and all((await _rows_of(chat, erased_id)).values())

    envelope = Envelope.wrap(
        UserDeleted(user_id=erased_id, requested_at=datetime.now(UTC)), source="identity"
    )
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        # Two deliveries of one event: distinct Nats-Msg-Ids get past JetStream's own
        # deduplication, so only chat's inbox stands between them and a second erasure.
        acks = [
            await js.publish(
                envelope.type,
                envelope.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"{envelope.id}-{attempt}"},
            )
            for attempt in range(2)
        ]

        async def both_handled() -> bool:
            info = await js.consumer_info(stream_name("identity"), "chat-erasure")
            return info.ack_floor.stream_seq >= acks[-1].seq

        await eventually(both_handled, timeout=30)
    finally:
        await nc.close()
    assert await _erasures(chat, erased_id) == 1
    assert await _rows_of(chat, erased_id) == dict.fromkeys(kept_before, 0)
    assert await _rows_of(chat, kept_id) == kept_before
    listing = await chat.get(CONV, headers=token_issuer.headers(erased_id))
    assert listing.json()["items"] == []

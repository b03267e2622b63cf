"""The workspace deletion saga (chat deletes a deleted workspace's data and says so, once)
and user erasure with workspaces (the user's own data goes; the workspace's stays)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from agentmesh.chat.models import AgentSnapshot, Budget, BudgetSpend, Conversation, Message, Run
from agentmesh.shared.events.contracts import UserDeleted, WorkspaceDeleted
from agentmesh.shared.events.envelope import Envelope
from agentmesh.shared.events.streams import stream_name

from . import workspaces
from .workspaces import (
    COMPLETIONS,
    CONV,
    Workspace,
    announce_agent,
    completion,
    converse,
    eventually,
    publish,
)

chat, nc = workspaces.chat, workspaces.nc  # fixtures: chat alone, a NATS client
TABLES = (Conversation, Run, Budget, BudgetSpend, AgentSnapshot)


async def rows_in(chat, workspace_id: uuid.UUID) -> dict[str, int]:
    """Each table's rows of the workspace (messages: those of its conversations)."""
    async with chat.app.state.sessionmaker() as session:
        counts = {
            model.__tablename__: await session.scalar(
                select(func.count()).select_from(model).where(model.workspace_id == workspace_id)
            )
            for model in TABLES
        }
        counts["messages"] = await session.scalar(
            select(func.count())
            .select_from(Message)
            .join(Conversation)
            .where(Conversation.workspace_id == workspace_id)
        )
    return counts


async def outbox_count(chat, subject: str, subject_id: uuid.UUID) -> int:
    outbox = chat.app.state.runtime.tables.outbox
    async with chat.app.state.sessionmaker() as session:
        return await session.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.subject == subject, outbox.c.subject_id == str(subject_id))
        )


async def fill(chat, ws: Workspace, token_issuer) -> list[dict[str, str]]:
    """Two members' conversations, a stateless run, a member and a workspace budget."""
    agent_id = await ws.agent()
    platform = token_issuer.headers(roles=("admin",))
    headers = []
    for role in ("member", "admin"):
        user = await ws.join(role)
        headers.append(ws.headers(user, role))
        url = f"/api/v1/workspaces/{ws.id}/members/{user}/budget"
        assert (await chat.put(url, json={"monthly_tokens": 10**6}, headers=platform)).is_success
        assert (await converse(chat, headers[-1], agent_id))[1].status_code == 200
    assert (await chat.post(COMPLETIONS, json=completion(agent_id), headers=headers[0])).is_success
    url = f"/api/v1/workspaces/{ws.id}/budget"
    assert (await chat.put(url, json={"monthly_tokens": 10**7}, headers=platform)).is_success
    return headers


async def delivered(nc, durable: str, ack) -> None:
    js = nc.jetstream()

    async def handled() -> bool:
        info = await js.consumer_info(stream_name("identity"), durable)
        return info.ack_floor.stream_seq >= ack.seq

    await eventually(handled, timeout=30)


async def test_workspace_deleted_purges_its_chat_data_once(chat, nc, token_issuer):
    doomed, kept = Workspace(chat, nc, token_issuer), Workspace(chat, nc, token_issuer)
    doomed_headers = await fill(chat, doomed, token_issuer)
    await fill(chat, kept, token_issuer)
    kept_before = await rows_in(chat, kept.id)
    assert all(kept_before.values()) and all((await rows_in(chat, doomed.id)).values())

    envelope = Envelope.wrap(
        WorkspaceDeleted(workspace_id=doomed.id, requested_at=datetime.now(UTC)),
        source="identity",
    )
    # Two deliveries of one event: distinct Nats-Msg-Ids get past JetStream's own
    # deduplication, so only chat's inbox stands between them and a second purge.
    acks = [await publish(nc, envelope, "identity", f"{envelope.id}-{n}") for n in range(2)]
    await delivered(nc, "chat-workspaces", acks[-1])
    assert await outbox_count(chat, "chat.workspace.purged", doomed.id) == 1
    assert await rows_in(chat, doomed.id) == dict.fromkeys(kept_before, 0)
    assert await rows_in(chat, kept.id) == kept_before
    for headers in doomed_headers:
        assert (await chat.get(CONV, headers=headers)).json()["items"] == []


async def test_erasure_deletes_the_users_own_data_and_keeps_the_workspaces(chat, nc, token_issuer):
    team = Workspace(chat, nc, token_issuer)
    ada = uuid.uuid4()
    # Ada made an agent in the team and chats with it there and in her personal workspace.
    team_agent = await team.agent(owner_id=ada)
    await team.join("admin", ada)
    ada_team = team.headers(ada, "admin")
    personal_agent = await announce_agent(chat, nc, ada, ada)
    assert (await converse(chat, token_issuer.headers(ada), personal_agent))[1].status_code == 200
    assert (await converse(chat, ada_team, team_agent))[1].status_code == 200
    bob = await team.join("member")
    bob_h = team.headers(bob, "member")
    bobs_conversation, answer = await converse(chat, bob_h, team_agent)
    assert answer.status_code == 200
    platform = token_issuer.headers(roles=("admin",))
    for url in (
        f"/api/v1/workspaces/{team.id}/budget",
        f"/api/v1/workspaces/{team.id}/members/{ada}/budget",
        f"/api/v1/workspaces/{ada}/budget",
        f"/api/v1/budgets/{ada}",
    ):
        assert (await chat.put(url, json={"monthly_tokens": 10**6}, headers=platform)).is_success

    envelope = Envelope.wrap(
        UserDeleted(user_id=ada, requested_at=datetime.now(UTC)), source="identity"
    )
    await delivered(nc, "chat-erasure", await publish(nc, envelope, "identity"))
    assert await outbox_count(chat, "chat.erasure.completed", ada) == 1
    assert await rows_in(chat, ada) == dict.fromkeys(await rows_in(chat, ada), 0)
    async with chat.app.state.sessionmaker() as session:
        for model in (Conversation, Run, Budget, BudgetSpend):
            left = select(func.count()).select_from(model).where(model.user_id == ada)
            assert await session.scalar(left) == 0, model.__tablename__
        snapshot = await session.get(AgentSnapshot, uuid.UUID(team_agent))
        team_budget = await session.get(Budget, (team.id, uuid.UUID(int=0)))
    # The agent she made in the team, Bob's conversation with it, the team's budget stay.
    assert snapshot is not None and not snapshot.deleted
    assert team_budget is not None
    assert (await chat.get(f"{CONV}/{bobs_conversation}", headers=bob_h)).status_code == 200
    assert (await converse(chat, bob_h, team_agent))[1].status_code == 200

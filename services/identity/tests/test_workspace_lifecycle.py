"""The ends of workspaces: erasing a member or an owner, and the workspace deletion saga
finishing when agents and chat report (a test publisher stands in for them)."""

from __future__ import annotations

import uuid

import nats
import pytest

from agentmesh.identity.workspaces.models import Membership, Workspace
from agentmesh.shared.events.contracts import (
    AgentsErasureCompleted,
    AgentsWorkspacePurged,
    ChatErasureCompleted,
    ChatWorkspacePurged,
)
from agentmesh.shared.testing.backbone import wait_until

from .test_erasure import reply_as
from .test_workspaces import join, new_workspace

WS = "/api/v1/workspaces"


@pytest.fixture
async def js(nats_url):
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def workspace_row(identity, workspace_id) -> Workspace | None:
    async with identity.app.state.sessionmaker() as session:
        return await session.get(Workspace, uuid.UUID(str(workspace_id)))


async def test_the_only_owner_of_a_shared_workspace_transfers_before_erasure(
    identity, make_account, outbox_events
):
    owner, member = await make_account(), await make_account()
    wid = (await new_workspace(identity, owner, "Team"))["id"]
    await join(identity, wid, owner, member, "admin")
    refused = await identity.delete("/api/v1/users/me", headers=owner.headers)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/transfer-ownership-first")
    assert problem["workspaces"] == [{"id": wid, "name": "Team"}]
    # Nothing happened: the owner still signs in and still owns the workspace.
    assert (await identity.get("/api/v1/users/me", headers=owner.headers)).status_code == 200
    moved = await identity.post(
        f"{WS}/{wid}/transfer", json={"user_id": member.id}, headers=owner.headers
    )
    assert moved.status_code in (200, 204), moved.text
    erased = await identity.delete("/api/v1/users/me", headers=owner.headers)
    assert erased.status_code == 202, erased.text
    listed = await identity.get(f"{WS}/{wid}/members", headers=member.headers)
    assert [m["user_id"] for m in listed.json()] == [member.id]
    assert await outbox_events("identity.membership.removed", wid)


async def test_a_members_erasure_leaves_the_workspace_and_a_lone_owners_deletes_it(
    identity, make_account, outbox_events
):
    owner, member = await make_account(), await make_account()
    shared = (await new_workspace(identity, owner, "Shared"))["id"]
    await join(identity, shared, owner, member, "member")
    alone = (await new_workspace(identity, member, "Mine alone"))["id"]
    assert (await identity.delete("/api/v1/users/me", headers=member.headers)).status_code == 202
    listed = await identity.get(f"{WS}/{shared}/members", headers=owner.headers)
    assert member.id not in [m["user_id"] for m in listed.json()]
    assert await outbox_events("identity.workspace.deleted", alone)
    assert not await outbox_events("identity.workspace.deleted", shared)


async def test_a_deleted_workspace_goes_once_agents_and_chat_have_purged_it(
    identity, make_account, js
):
    owner, member = await make_account(), await make_account()
    wid = (await new_workspace(identity, owner))["id"]
    await join(identity, wid, owner, member, "viewer")
    assert (await identity.delete(f"{WS}/{wid}", headers=owner.headers)).status_code == 202
    await reply_as(js, AgentsWorkspacePurged(workspace_id=wid), "agents")

    async def agents_recorded() -> bool:
        row = await workspace_row(identity, wid)
        return row is not None and row.agents_purged_at is not None

    await wait_until(agents_recorded, timeout=30)
    assert (await workspace_row(identity, wid)).chat_purged_at is None
    # Chat reports twice (a retry): the workspace, its members and invitations go once.
    await reply_as(js, ChatWorkspacePurged(workspace_id=wid), "chat")
    await reply_as(js, ChatWorkspacePurged(workspace_id=wid), "chat")

    async def removed() -> bool:
        return await workspace_row(identity, wid) is None

    await wait_until(removed, timeout=30)
    async with identity.app.state.sessionmaker() as session:
        assert await session.get(Membership, (uuid.UUID(wid), uuid.UUID(member.id))) is None
    # A report for a workspace not being deleted changes nothing.
    live = (await new_workspace(identity, owner, "Live"))["id"]
    await reply_as(js, AgentsWorkspacePurged(workspace_id=live), "agents")
    await reply_as(js, ChatWorkspacePurged(workspace_id=live), "chat")
    assert (await identity.get(f"{WS}/{live}", headers=owner.headers)).status_code == 200


async def test_an_erased_accounts_personal_workspace_goes_with_it(identity, make_account, js):
    account = await make_account()
    assert await workspace_row(identity, account.id) is not None
    assert (await identity.delete("/api/v1/users/me", headers=account.headers)).status_code == 202
    await reply_as(js, AgentsErasureCompleted(user_id=account.id), "agents")
    await reply_as(js, ChatErasureCompleted(user_id=account.id), "chat")

    async def removed() -> bool:
        return await workspace_row(identity, account.id) is None

    await wait_until(removed, timeout=30)

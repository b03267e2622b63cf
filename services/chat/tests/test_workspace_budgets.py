"""Usage and budgets in workspaces: usage by member for the workspace's admins, a member's
budget and the workspace's budget (both must allow a run), and no overspending of the
workspace's budget by members starting runs at once."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.models import new_id
from agentmesh.chat.runs.repository import reserve_budget, start_run
from agentmesh.shared.testing.fixtures import app_client

from . import workspaces
from .conftest import chat_settings
from .workspaces import (
    COMPLETIONS,
    CONV,
    USAGE,
    Workspace,
    announce_agent,
    assert_problem,
    completion,
    converse,
    eventually,
)

chat, nc = workspaces.chat, workspaces.nc  # fixtures: chat alone, a NATS client


def tokens_of(run: dict) -> int:
    return run["input_tokens"] + run["output_tokens"]


async def run_of(chat, headers: dict, response) -> dict:
    run = await chat.get(f"/api/v1/runs/{response.headers['X-Run-Id']}", headers=headers)
    assert run.status_code == 200, run.text
    return run.json()


async def test_usage_by_member_is_for_the_workspaces_admins(chat, nc, token_issuer):
    ws = Workspace(chat, nc, token_issuer)
    agent_id = await ws.agent()
    ada, bob, cy = await ws.join("member"), await ws.join("admin"), await ws.join("viewer")
    ada_h, bob_h, cy_h = (
        ws.headers(ada, "member"),
        ws.headers(bob, "admin"),
        ws.headers(cy, "viewer"),
    )
    for headers in (ada_h, ada_h, bob_h):
        assert (await converse(chat, headers, agent_id))[1].status_code == 200
    assert (await chat.post(COMPLETIONS, json=completion(agent_id), headers=bob_h)).is_success
    # Ada's runs in her personal workspace are not the team's.
    personal_agent = await announce_agent(chat, nc, ada, ada)
    assert (await converse(chat, token_issuer.headers(ada), personal_agent))[1].status_code == 200

    by_member = await chat.get(USAGE, params={"group_by": "member"}, headers=bob_h)
    assert by_member.status_code == 200, by_member.text
    report = by_member.json()
    assert (report["workspace_id"], report["user_id"]) == (str(ws.id), None)
    assert {item["key"]: item["runs"] for item in report["items"]} == {str(ada): 2, str(bob): 2}
    assert report["totals"]["runs"] == 4
    own = (await chat.get(USAGE, headers=ada_h)).json()
    assert (own["workspace_id"], own["user_id"], own["totals"]["runs"]) == (str(ws.id), str(ada), 2)
    theirs = (await chat.get(USAGE, params={"user_id": str(ada)}, headers=bob_h)).json()
    assert theirs["totals"] == own["totals"]
    for refused in (ada_h, cy_h):
        assert_problem(
            await chat.get(USAGE, params={"group_by": "member"}, headers=refused), 403, "forbidden"
        )
        assert_problem(await chat.get(USAGE, params={"user_id": str(bob)}, headers=refused), 403)
    assert (await chat.get(USAGE, headers=cy_h)).json()["totals"]["runs"] == 0
    personal = (await chat.get(USAGE, headers=token_issuer.headers(ada))).json()
    assert (personal["workspace_id"], personal["totals"]["runs"]) == (str(ada), 1)
    # Another workspace's usage: platform admins only (404 for its members' peers).
    assert_problem(await chat.get(USAGE, params={"workspace_id": str(ada)}, headers=bob_h), 404)
    platform = token_issuer.headers(roles=("admin",))
    seen = await chat.get(
        USAGE, params={"workspace_id": str(ws.id), "group_by": "member"}, headers=platform
    )
    assert seen.json()["totals"]["runs"] == 4


async def test_member_and_workspace_budgets_both_apply(chat, nc, token_issuer):
    ws = Workspace(chat, nc, token_issuer)
    agent_id = await ws.agent()
    ada, bob = await ws.join("member"), await ws.join("admin")
    ada_h, bob_h = ws.headers(ada, "member"), ws.headers(bob, "admin")
    platform = token_issuer.headers(roles=("admin",))
    ada_budget = f"/api/v1/workspaces/{ws.id}/members/{ada}/budget"
    ws_budget = f"/api/v1/workspaces/{ws.id}/budget"
    assert_problem(await chat.get(ws_budget, headers=ada_h), 404, "budget-not-found")

    _, first = await converse(chat, ada_h, agent_id)
    per_run = tokens_of(await run_of(chat, ada_h, first))
    # Ada's budget, set by an admin of the workspace: her spend so far already reaches it.
    put = await chat.put(ada_budget, json={"monthly_tokens": per_run}, headers=bob_h)
    assert put.status_code == 200, put.text
    assert (put.json()["workspace_id"], put.json()["user_id"]) == (str(ws.id), str(ada))
    assert (put.json()["spent_tokens"], put.json()["reserved_tokens"]) == (per_run, 0)
    assert_problem((await converse(chat, ada_h, agent_id))[1], 402, "budget-exceeded")
    refused = await chat.post(COMPLETIONS, json=completion(agent_id), headers=ada_h)
    assert refused.status_code == 402 and refused.json()["error"]["type"] == "insufficient_quota"
    assert (await converse(chat, bob_h, agent_id))[1].status_code == 200  # Bob has none
    # Ada, elsewhere, is not limited by her budget in this workspace.
    personal_agent = await announce_agent(chat, nc, ada, ada)
    assert (await converse(chat, token_issuer.headers(ada), personal_agent))[1].status_code == 200

    # The workspace's budget, set by a platform admin, counts every member's runs.
    spent = (await chat.get(USAGE, params={"group_by": "member"}, headers=bob_h)).json()
    total = spent["totals"]["total_tokens"]
    put = await chat.put(ws_budget, json={"monthly_tokens": total + 1}, headers=platform)
    assert put.status_code == 200, put.text
    assert (put.json()["user_id"], put.json()["spent_tokens"]) == (None, total)
    assert (await converse(chat, bob_h, agent_id))[1].status_code == 200  # spent < limit
    assert_problem((await converse(chat, bob_h, agent_id))[1], 402, "budget-exceeded")
    assert (await chat.get(ws_budget, headers=ada_h)).json()["spent_tokens"] > total

    # Null clears a limit: the workspace's, then Ada's too.
    cleared = await chat.put(ws_budget, json={"monthly_tokens": None}, headers=platform)
    assert cleared.json()["monthly_tokens"] is None
    assert (await converse(chat, bob_h, agent_id))[1].status_code == 200
    assert_problem((await converse(chat, ada_h, agent_id))[1], 402, "budget-exceeded")
    await chat.put(ada_budget, json={"monthly_tokens": None}, headers=bob_h)
    assert (await converse(chat, ada_h, agent_id))[1].status_code == 200


async def test_who_may_read_and_set_budgets(chat, nc, token_issuer):
    ws, elsewhere = Workspace(chat, nc, token_issuer), Workspace(chat, nc, token_issuer)
    ada, bob = await ws.join("member"), await ws.join("owner")
    ada_h, bob_h = ws.headers(ada, "member"), ws.headers(bob, "owner")
    ada_budget = f"/api/v1/workspaces/{ws.id}/members/{ada}/budget"
    bob_budget = f"/api/v1/workspaces/{ws.id}/members/{bob}/budget"
    ws_budget = f"/api/v1/workspaces/{ws.id}/budget"
    body = {"monthly_tokens": 1000, "monthly_cost_usd": "2.5"}
    assert (await chat.put(ada_budget, json=body, headers=bob_h)).status_code == 200
    assert (await chat.get(ada_budget, headers=ada_h)).json()["monthly_tokens"] == 1000
    assert_problem(await chat.put(ada_budget, json=body, headers=ada_h), 403, "forbidden")
    assert_problem(await chat.get(bob_budget, headers=ada_h), 403, "forbidden")
    assert_problem(await chat.get(bob_budget, headers=bob_h), 404, "budget-not-found")
    # Only a platform admin sets the workspace's budget, not even its owner.
    assert_problem(await chat.put(ws_budget, json=body, headers=bob_h), 403, "forbidden")
    stranger = uuid.uuid4()
    missing = await chat.put(
        f"/api/v1/workspaces/{ws.id}/members/{stranger}/budget", json=body, headers=bob_h
    )
    assert_problem(missing, 404, "member-not-found")
    # An admin of another workspace is a stranger here.
    other_admin = elsewhere.headers(await elsewhere.join("admin"), "admin")
    for method in ("GET", "PUT"):
        response = await chat.request(method, ada_budget, json=body, headers=other_admin)
        assert_problem(response, 404, "workspace-not-found")
    assert_problem(await chat.get(ws_budget, headers=other_admin), 404, "workspace-not-found")
    for invalid in ({"monthly_tokens": 0}, {"monthly_cost_usd": "-1"}, {"tokens": 5}):
        assert_problem(await chat.put(ada_budget, json=invalid, headers=bob_h), 422)


async def test_concurrent_runs_cannot_overspend_the_workspace_budget(
    chat, nc, token_issuer, monkeypatch
):
    """Four members start two runs each at once. Each run reserves the agent's
    max_output_tokens (100) against the workspace's budget (250) and its member's (large),
    and a start is allowed while spent + reserved < 250: exactly 3 of 8 start. The runs are
    held until every request is decided, so finishing ones can't free room."""
    ws = Workspace(chat, nc, token_issuer)
    agent_id = await ws.agent(max_output_tokens=100)
    platform = token_issuer.headers(roles=("admin",))
    members = [await ws.join("member") for _ in range(4)]
    ws_budget = f"/api/v1/workspaces/{ws.id}/budget"
    assert (await chat.put(ws_budget, json={"monthly_tokens": 250}, headers=platform)).is_success
    for user in members:
        url = f"/api/v1/workspaces/{ws.id}/members/{user}/budget"
        assert (await chat.put(url, json={"monthly_tokens": 10**6}, headers=platform)).is_success
    starts = []
    for user in members:
        headers = ws.headers(user, "member")
        for _ in range(2):
            created = await chat.post(CONV, json={"agent_id": agent_id}, headers=headers)
            starts.append((headers, created.json()["id"]))

    executor = chat.app.state.executor
    run_loop, gate, decided, all_decided = executor._loop, asyncio.Event(), [], asyncio.Event()

    def decide(*_: object) -> None:  # a run is held, or a request was answered
        decided.append(1)
        if len(decided) == len(starts):
            all_decided.set()

    async def held_loop(*args, **kwargs):
        decide()
        await gate.wait()
        return await run_loop(*args, **kwargs)

    monkeypatch.setattr(executor, "_loop", held_loop)
    tasks = [
        asyncio.create_task(
            chat.post(
                f"{CONV}/{conversation}/messages", json={"content": "Hello there"}, headers=headers
            )
        )
        for headers, conversation in starts
    ]
    for task in tasks:
        task.add_done_callback(decide)
    await asyncio.wait_for(all_decided.wait(), 30)
    in_flight = (await chat.get(ws_budget, headers=platform)).json()
    assert (in_flight["reserved_tokens"], in_flight["spent_tokens"]) == (300, 0)
    gate.set()
    responses = await asyncio.gather(*tasks)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [402] * 5, [r.text for r in responses]
    for response in responses:
        if response.status_code == 402:
            assert_problem(response, 402, "budget-exceeded")
    runs = [await run_of(chat, platform, r) for r in responses if r.status_code == 200]
    settled = (await chat.get(ws_budget, headers=platform)).json()
    assert settled["reserved_tokens"] == 0
    assert settled["spent_tokens"] == sum(tokens_of(run) for run in runs)
    # A refused start reserved nothing on its member's budget either.
    spent_by_members = 0
    for user in members:
        url = f"/api/v1/workspaces/{ws.id}/members/{user}/budget"
        budget = (await chat.get(url, headers=platform)).json()
        assert budget["reserved_tokens"] == 0
        spent_by_members += budget["spent_tokens"]
    assert spent_by_members == settled["spent_tokens"]


async def test_an_orphaned_run_releases_both_budgets(common, nc, token_issuer):
    """A run whose replica died holds its reservation on the member's and the workspace's
    budget; the sweep that fails it releases both."""
    app = create_chat(chat_settings(common, run_heartbeat_seconds=0.2))
    async with app_client(app) as chat:
        chat.app = app
        ws = Workspace(chat, nc, token_issuer)
        agent_id = await ws.agent()
        user = await ws.join("member")
        platform = token_issuer.headers(roles=("admin",))
        budgets = [
            f"/api/v1/workspaces/{ws.id}/budget",
            f"/api/v1/workspaces/{ws.id}/members/{user}/budget",
        ]
        for url in budgets:
            assert (
                await chat.put(url, json={"monthly_tokens": 10**6}, headers=platform)
            ).is_success
        created = await chat.post(
            CONV, json={"agent_id": agent_id}, headers=ws.headers(user, "member")
        )
        # What a replica leaves behind when it dies mid-answer: the reservation, the run.
        run_id, question_id = new_id(), new_id()
        async with app.state.sessionmaker() as session, session.begin():
            assert await reserve_budget(session, ws.id, user, 100)
            await start_run(
                session,
                run_id=run_id,
                workspace_id=ws.id,
                user_id=user,
                agent_id=uuid.UUID(agent_id),
                agent_version=1,
                model="offline",
                reserved=100,
                conversation_id=uuid.UUID(created.json()["id"]),
                user_message=(question_id, None, "Say hello"),
                user_message_id=question_id,
            )
            await session.execute(
                text(
                    "UPDATE chat.runs SET heartbeat_at = now() - interval '1 hour' WHERE id = :id"
                ),
                {"id": run_id},
            )
        for url in budgets:
            assert (await chat.get(url, headers=platform)).json()["reserved_tokens"] == 100

        async def swept() -> bool:
            run = await chat.get(f"/api/v1/runs/{run_id}", headers=platform)
            return run.json()["status"] == "failed"

        await eventually(swept)
        for url in budgets:
            assert (await chat.get(url, headers=platform)).json()["reserved_tokens"] == 0

"""Usage on every run, usage reports, the price table, and monthly budgets (402, atomic)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.settings import ChatSettings, Price
from agentmesh.shared.errors import PROBLEM_JSON
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, app_client

CONV = "/api/v1/conversations"
USAGE = "/api/v1/usage"
BUDGETS = "/api/v1/budgets"
#: USD per million tokens: high, so a single offline run has a visible cost.
PRICES = {"offline": Price(input=Decimal("1000"), output=Decimal("3000"))}


@pytest.fixture
async def chat(common, agents):
    """This module's chat app prices the offline model (``make_agent`` uses it too)."""
    settings = ChatSettings(common=common, internal_token=TEST_INTERNAL_TOKEN, prices=PRICES)
    app = create_chat(settings)
    async with app_client(app) as client:
        client.app = app
        yield client


@pytest.fixture
def admin(token_issuer):
    return token_issuer.headers(roles=("admin",))


async def new_conversation(chat, headers: dict, agent_id: str) -> str:
    created = await chat.post(CONV, json={"agent_id": agent_id}, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def turn(chat, headers: dict, agent_id: str, conversation_id: str | None = None):
    conversation_id = conversation_id or await new_conversation(chat, headers, agent_id)
    return await chat.post(
        f"{CONV}/{conversation_id}/messages", json={"content": "Hello there"}, headers=headers
    )


async def run_of(chat, headers: dict, response) -> dict:
    run = await chat.get(f"/api/v1/runs/{response.headers['X-Run-Id']}", headers=headers)
    assert run.status_code == 200, run.text
    return run.json()


async def outbox_events(chat, subject: str, subject_id: str) -> list[dict]:
    outbox = chat.app.state.runtime.tables.outbox
    async with chat.app.state.sessionmaker() as session:
        rows = await session.scalars(
            select(outbox.c.envelope)
            .where(outbox.c.subject == subject, outbox.c.subject_id == str(subject_id))
            .order_by(outbox.c.id)
        )
        return list(rows)


def assert_problem(response, status: int, slug: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    if slug:
        assert body["type"].endswith("/" + slug)
    return body


async def test_each_run_records_usage_and_cost(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    first, second = await make_agent(headers), await make_agent(headers, name="Other")
    runs = []
    for agent in (first, first, second):
        answer = await turn(chat, headers, agent["id"])
        assert answer.status_code == 200, answer.text
        run = await run_of(chat, headers, answer)
        assert run["status"] == "completed" and run["agent_id"] == agent["id"]
        assert (run["model"], run["provider"]) == ("offline", "offline")
        assert run["input_tokens"] > 0 and run["output_tokens"] > 0
        assert answer.json()["output_tokens"] == run["output_tokens"]
        assert 0 < run["ttft_ms"] <= run["latency_ms"]
        price = PRICES["offline"]
        expected = (price.input * run["input_tokens"] + price.output * run["output_tokens"]) / (
            Decimal(1_000_000)
        )
        assert Decimal(run["cost_usd"]) == expected > 0
        runs.append(run)

    by_agent = (await chat.get(USAGE, params={"group_by": "agent"}, headers=headers)).json()
    assert by_agent["group_by"] == "agent"
    items = {item["key"]: item for item in by_agent["items"]}
    assert set(items) == {first["id"], second["id"]}
    assert items[first["id"]]["runs"] == 2 and items[second["id"]]["runs"] == 1
    for agent_id, item in items.items():
        mine = [r for r in runs if r["agent_id"] == agent_id]
        assert item["input_tokens"] == sum(r["input_tokens"] for r in mine)
        assert item["output_tokens"] == sum(r["output_tokens"] for r in mine)
        assert item["total_tokens"] == item["input_tokens"] + item["output_tokens"]
        assert Decimal(item["cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in mine)
        assert item["avg_latency_ms"] > 0 and item["avg_ttft_ms"] > 0
    totals = by_agent["totals"]
    assert totals["runs"] == 3
    assert totals["total_tokens"] == sum(r["input_tokens"] + r["output_tokens"] for r in runs)
    assert Decimal(totals["cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in runs)

    by_model = (await chat.get(USAGE, params={"group_by": "model"}, headers=headers)).json()
    assert [(i["key"], i["runs"]) for i in by_model["items"]] == [("offline", 3)]
    by_day = (await chat.get(USAGE, params={"group_by": "day"}, headers=headers)).json()
    assert [(i["key"], i["runs"]) for i in by_day["items"]] == [
        (datetime.now(UTC).date().isoformat(), 3)
    ]
    past = await chat.get(USAGE, params={"from": "2001-01-01", "to": "2001-01-31"}, headers=headers)
    assert past.status_code == 200
    assert past.json()["from"].startswith("2001-01-01T00:00:00")
    assert past.json()["to"].startswith("2001-02-01T00:00:00")  # a date `to` is included whole
    assert past.json()["items"] == [] and past.json()["totals"]["runs"] == 0


async def test_usage_query_validation(chat, token_issuer):
    headers = token_issuer.headers()
    for params in (
        {"group_by": "week"},
        {"from": "2024-05-02", "to": "2024-05-01"},
        {"from": "yesterday"},
        {"to": "2024-13-01"},
    ):
        assert_problem(await chat.get(USAGE, params=params, headers=headers), 422)


async def test_message_completed_carries_the_usage(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    answer = await turn(chat, headers, agent["id"])
    run = await run_of(chat, headers, answer)
    events = await outbox_events(chat, "chat.message.completed", answer.json()["id"])
    assert len(events) == 1
    data = events[0]["data"]
    assert data["run_id"] == run["id"] and data["agent_id"] == agent["id"]
    assert (data["model"], data["provider"], data["status"]) == ("offline", "offline", "completed")
    assert data["input_tokens"] == run["input_tokens"]
    assert data["output_tokens"] == run["output_tokens"]
    assert Decimal(data["cost_usd"]) == Decimal(run["cost_usd"])
    assert data["latency_ms"] > 0 and data["time_to_first_token_ms"] > 0


async def test_admins_see_anyones_usage_others_dont(chat, make_agent, token_issuer, admin):
    user_id = uuid.uuid4()
    owner = token_issuer.headers(user_id)
    agent = await make_agent(owner)
    assert (await turn(chat, owner, agent["id"])).status_code == 200
    # The user's runs are in their personal workspace (its id is theirs).
    params = {"user_id": str(user_id), "group_by": "model", "workspace_id": str(user_id)}
    seen = await chat.get(USAGE, params=params, headers=admin)
    assert seen.status_code == 200
    assert seen.json()["user_id"] == str(user_id) and seen.json()["totals"]["runs"] == 1
    assert seen.json()["workspace_id"] == str(user_id)
    assert (await chat.get(USAGE, params=params, headers=owner)).json()["totals"]["runs"] == 1
    other = token_issuer.headers()
    assert_problem(await chat.get(USAGE, params=params, headers=other), 404, "workspace-not-found")
    # In their own workspace (whose owner they are), they see nothing of the user's.
    del params["workspace_id"]
    assert (await chat.get(USAGE, params=params, headers=other)).json()["totals"]["runs"] == 0
    # An admin's own figures are their own, not everyone's.
    assert (await chat.get(USAGE, headers=admin)).json()["totals"]["runs"] == 0


async def test_budgets_are_set_by_admins(chat, token_issuer, admin):
    user_id = uuid.uuid4()
    user = token_issuer.headers(user_id)
    url = f"{BUDGETS}/{user_id}"
    assert_problem(await chat.put(url, json={"monthly_tokens": 10}, headers=user), 403)
    assert_problem(await chat.get(url, headers=admin), 404, "budget-not-found")
    for body in ({"monthly_tokens": 0}, {"monthly_cost_usd": "-1"}, {"tokens": 5}):
        assert_problem(await chat.put(url, json=body, headers=admin), 422)
    put = await chat.put(
        url, json={"monthly_tokens": 1000, "monthly_cost_usd": "2.5"}, headers=admin
    )
    assert put.status_code == 200, put.text
    budget = (await chat.get(url, headers=user)).json()
    assert budget["monthly_tokens"] == 1000 and Decimal(budget["monthly_cost_usd"]) == 2.5
    assert (budget["spent_tokens"], budget["reserved_tokens"]) == (0, 0)
    assert_problem(await chat.get(url, headers=token_issuer.headers()), 403)
    assert_problem(await chat.delete(url, headers=user), 403)
    assert (await chat.delete(url, headers=admin)).status_code == 204
    assert_problem(await chat.delete(url, headers=admin), 404)


async def test_runs_until_the_token_budget_is_spent_then_402(chat, make_agent, token_issuer, admin):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    agent = await make_agent(headers)
    before = await turn(chat, headers, agent["id"])  # spend before the budget counts
    run = await run_of(chat, headers, before)
    per_run = run["input_tokens"] + run["output_tokens"]
    url = f"{BUDGETS}/{user_id}"
    limit = 3 * per_run - 1
    budget = (await chat.put(url, json={"monthly_tokens": limit}, headers=admin)).json()
    assert budget["spent_tokens"] == per_run and Decimal(budget["spent_cost_usd"]) > 0
    outcomes = []
    for _ in range(6):
        spent = (await chat.get(url, headers=headers)).json()
        conversation_id = await new_conversation(chat, headers, agent["id"])
        answer = await turn(chat, headers, agent["id"], conversation_id)
        outcomes.append(answer.status_code)
        assert spent["reserved_tokens"] == 0
        if spent["spent_tokens"] < limit:
            assert answer.status_code == 200, answer.text
            continue
        problem = assert_problem(answer, 402, "budget-exceeded")
        assert "budget" in problem["detail"]
        history = await chat.get(f"{CONV}/{conversation_id}/messages", headers=headers)
        assert history.json()["items"] == []  # a refused turn leaves nothing behind
        break
    assert outcomes[-1] == 402 and outcomes.count(200) >= 1
    # Raising the budget lets the user run again.
    await chat.put(url, json={"monthly_tokens": limit + 10 * per_run}, headers=admin)
    assert (await turn(chat, headers, agent["id"])).status_code == 200


async def test_cost_budget(chat, make_agent, token_issuer, admin):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    agent = await make_agent(headers)
    await chat.put(f"{BUDGETS}/{user_id}", json={"monthly_cost_usd": "0.000001"}, headers=admin)
    assert (await turn(chat, headers, agent["id"])).status_code == 200
    assert_problem(await turn(chat, headers, agent["id"]), 402, "budget-exceeded")


async def test_budget_is_atomic_under_concurrent_starts(
    chat, make_agent, token_issuer, admin, monkeypatch
):
    """Runs reserve the agent's max_output_tokens (100) while in flight, and a start is
    allowed while spent + reserved < 250: 0, 100, 200 pass, so exactly 3 of 8 start.
    The runs are held until every request is decided, so finishing ones can't free room."""
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    agent = await make_agent(headers, max_output_tokens=100)
    url = f"{BUDGETS}/{user_id}"
    assert (await chat.put(url, json={"monthly_tokens": 250}, headers=admin)).status_code == 200
    conversations = [await new_conversation(chat, headers, agent["id"]) for _ in range(8)]

    executor = chat.app.state.executor
    run_loop, gate, decided, all_decided = executor._loop, asyncio.Event(), [], asyncio.Event()

    def decide(*_: object) -> None:  # a run is held, or a request was answered
        decided.append(1)
        if len(decided) == len(conversations):
            all_decided.set()

    async def held_loop(*args, **kwargs):
        decide()
        await gate.wait()
        return await run_loop(*args, **kwargs)

    monkeypatch.setattr(executor, "_loop", held_loop)
    tasks = [asyncio.create_task(turn(chat, headers, agent["id"], c)) for c in conversations]
    for task in tasks:
        task.add_done_callback(decide)
    await asyncio.wait_for(all_decided.wait(), 30)
    in_flight = (await chat.get(url, headers=headers)).json()
    assert (in_flight["reserved_tokens"], in_flight["spent_tokens"]) == (300, 0)
    gate.set()
    responses = await asyncio.gather(*tasks)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [402] * 5, [r.text for r in responses]
    for response in responses:
        if response.status_code == 402:
            assert_problem(response, 402, "budget-exceeded")
    runs = [await run_of(chat, headers, r) for r in responses if r.status_code == 200]
    settled = (await chat.get(url, headers=headers)).json()
    assert settled["reserved_tokens"] == 0
    assert settled["spent_tokens"] == sum(r["input_tokens"] + r["output_tokens"] for r in runs)


async def test_a_run_in_flight_when_the_budget_is_set_counts(
    chat, make_agent, token_issuer, admin, monkeypatch
):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    agent = await make_agent(headers)
    executor = chat.app.state.executor
    run_loop, gate, running = executor._loop, asyncio.Event(), asyncio.Event()

    async def held_loop(*args, **kwargs):
        running.set()
        await gate.wait()
        return await run_loop(*args, **kwargs)

    monkeypatch.setattr(executor, "_loop", held_loop)
    answer = asyncio.create_task(turn(chat, headers, agent["id"]))
    await asyncio.wait_for(running.wait(), 30)
    url = f"{BUDGETS}/{user_id}"
    assert (await chat.put(url, json={"monthly_tokens": 10**6}, headers=admin)).status_code == 200
    gate.set()
    run = await run_of(chat, headers, await answer)
    spent = (await chat.get(url, headers=headers)).json()
    assert spent["spent_tokens"] == run["input_tokens"] + run["output_tokens"] > 0

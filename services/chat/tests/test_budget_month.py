"""A run reserved in the last second of a month and finished after midnight releases its
reservation (and counts its spend) in the month it started in, not the new one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from agentmesh.chat.runs.repository import this_month

from .test_orphans import sql
from .test_usage_budgets import BUDGETS, run_of, turn

OTHER_RESERVATION = 70  # a run of the new month, still in flight


async def test_a_reservation_at_the_end_of_a_month_is_released_in_that_month(
    chat, make_agent, token_issuer, monkeypatch
):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    admin = token_issuer.headers(roles=("admin",))
    agent = await make_agent(headers, max_output_tokens=100)
    budget = await chat.put(f"{BUDGETS}/{user_id}", json={"monthly_tokens": 10**6}, headers=admin)
    assert budget.status_code == 200, budget.text
    executor = chat.app.state.executor
    run_loop, gate, running = executor._loop, asyncio.Event(), asyncio.Event()

    async def held_loop(*args, **kwargs):
        running.set()
        await gate.wait()
        return await run_loop(*args, **kwargs)

    monkeypatch.setattr(executor, "_loop", held_loop)
    answer = asyncio.create_task(turn(chat, headers, agent["id"]))
    await asyncio.wait_for(running.wait(), 30)

    # Move the run and its reservation to 23:59:59 UTC of the last day of last month; the
    # new month has a reservation of its own. The run then ends after midnight (now).
    new_month = this_month()
    old_month = (new_month - timedelta(days=1)).replace(day=1)
    last_second = datetime(new_month.year, new_month.month, 1, tzinfo=UTC) - timedelta(seconds=1)
    rows = await sql(
        chat, "SELECT month, reserved_tokens FROM chat.budget_spend WHERE user_id = :u", u=user_id
    )
    assert [(r["month"], r["reserved_tokens"]) for r in rows] == [(new_month, 100)]
    await sql(
        chat, "UPDATE chat.runs SET created_at = :t WHERE user_id = :u", t=last_second, u=user_id
    )
    await sql(
        chat,
        "UPDATE chat.budget_spend SET month = :old WHERE user_id = :u",
        old=old_month,
        u=user_id,
    )
    await sql(
        chat,
        "INSERT INTO chat.budget_spend (workspace_id, user_id, month, tokens, "
        "cost_usd, reserved_tokens) VALUES (:u, :u, :m, 0, 0, :r)",
        u=user_id,
        m=new_month,
        r=OTHER_RESERVATION,
    )
    gate.set()
    response = await answer
    assert response.status_code == 200, response.text
    run = await run_of(chat, headers, response)
    spent = run["input_tokens"] + run["output_tokens"]
    assert spent > 0

    rows = await sql(
        chat,
        "SELECT month, tokens, reserved_tokens FROM chat.budget_spend "
        "WHERE user_id = :u ORDER BY month",
        u=user_id,
    )
    assert [(r["month"], r["tokens"], r["reserved_tokens"]) for r in rows] == [
        (old_month, spent, 0),  # released (and spent) in the month the run started
        (new_month, 0, OTHER_RESERVATION),  # the new month's reservation is untouched
    ]

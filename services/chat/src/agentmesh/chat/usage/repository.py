"""The usage and budget queries: a report's ``GROUP BY`` over the runs, and a budget's
row with its month's spend (``budget_spend``: its tokens, cost and reservations)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Label, Row, Text, cast, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.models import WHOLE_WORKSPACE, Budget, BudgetSpend, Run
from agentmesh.chat.usage.schemas import GroupBy
from agentmesh.shared.db import rowcount

# Spend recorded before the budget existed counts: seed this month from the runs (of the
# member in the workspace, or of the whole workspace). A row already there is
# authoritative (it has tracked every run since), so nothing changes.
_SEED_SPEND = text("""
INSERT INTO chat.budget_spend (workspace_id, user_id, month, tokens, cost_usd, reserved_tokens)
SELECT :workspace_id, :user_id, :month, COALESCE(SUM(input_tokens + output_tokens), 0),
       COALESCE(SUM(cost_usd), 0), 0
FROM chat.runs WHERE workspace_id = :workspace_id AND created_at >= :since
  AND (:user_id = CAST(:whole AS uuid) OR user_id = :user_id)
ON CONFLICT (workspace_id, user_id, month) DO NOTHING
""")


def _figure_columns() -> tuple[Any, ...]:
    return (
        func.count().label("runs"),
        func.coalesce(func.sum(Run.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(Run.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(Run.cost_usd), 0).label("cost_usd"),
        func.avg(Run.latency_ms).label("avg_latency_ms"),
        func.avg(Run.ttft_ms).label("avg_ttft_ms"),
    )


async def usage(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    user_id: uuid.UUID | None,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
) -> tuple[list[Row[Any]], Row[Any]]:
    """The figures (``runs``, ``input_tokens``, ``output_tokens``, ``cost_usd``,
    ``avg_latency_ms``, ``avg_ttft_ms``) of the finished runs in ``[start, end)`` of the
    workspace (of ``user_id`` only, unless None): per ``key`` in key order, and in total."""
    key: Label[Any] = {
        "agent": cast(Run.agent_id, Text),
        "model": Run.model,
        "day": func.to_char(func.timezone("UTC", Run.created_at), "YYYY-MM-DD"),
        "member": cast(Run.user_id, Text),
    }[group_by].label("key")
    runs = [
        Run.workspace_id == workspace_id,
        Run.created_at >= start,
        Run.created_at < end,
        Run.finished_at.is_not(None),
    ]
    if user_id is not None:
        runs.append(Run.user_id == user_id)
    groups = await session.execute(
        select(key, *_figure_columns()).where(*runs).group_by(key).order_by(key)
    )
    totals = (await session.execute(select(*_figure_columns()).where(*runs))).one()
    return list(groups), totals


async def upsert_budget(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    monthly_tokens: int | None,
    monthly_cost_usd: Decimal | None,
) -> None:
    """Create or replace the limits of ``user_id`` (``WHOLE_WORKSPACE``: the workspace's)."""
    limits = {"monthly_tokens": monthly_tokens, "monthly_cost_usd": monthly_cost_usd}
    statement = insert(Budget).values(workspace_id=workspace_id, user_id=user_id, **limits)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Budget.workspace_id, Budget.user_id],
            set_={**limits, "updated_at": func.now()},
        )
    )


async def seed_spend(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID, month: date, since: datetime
) -> None:
    """The month's spend row from the runs since ``since``, unless there is one already."""
    await session.execute(
        _SEED_SPEND,
        {
            "workspace_id": workspace_id,
            "user_id": user_id,
            "whole": WHOLE_WORKSPACE,
            "month": month,
            "since": since,
        },
    )


async def budget_with_spend(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID, month: date
) -> tuple[Budget, BudgetSpend | None] | None:
    """The budget and its spend row of ``month`` (None: no spend yet), or None."""
    row = (
        await session.execute(
            select(Budget, BudgetSpend)
            .join(
                BudgetSpend,
                (BudgetSpend.workspace_id == Budget.workspace_id)
                & (BudgetSpend.user_id == Budget.user_id)
                & (BudgetSpend.month == month),
                isouter=True,
            )
            .where(Budget.workspace_id == workspace_id, Budget.user_id == user_id)
            .execution_options(populate_existing=True)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def delete_budget(session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Delete the budget and its spend rows; False when there was none."""
    mine = (Budget.workspace_id == workspace_id, Budget.user_id == user_id)
    deleted = await session.execute(delete(Budget).where(*mine))
    if not rowcount(deleted):
        return False
    await session.execute(
        delete(BudgetSpend).where(
            BudgetSpend.workspace_id == workspace_id, BudgetSpend.user_id == user_id
        )
    )
    return True

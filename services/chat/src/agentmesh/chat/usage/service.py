"""Usage reports over the ``runs`` table, and the admin side of monthly budgets.

A run's usage lives on its row, so a report is one ``GROUP BY`` over the caller's runs.
Budgets are enforced by ``runs.store.reserve_budget``; here they are set, read and removed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Label, Text, cast, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.models import Budget, BudgetSpend, Run
from agentmesh.chat.runs.store import this_month
from agentmesh.chat.usage.schemas import (
    BudgetIn,
    BudgetOut,
    GroupBy,
    UsageFigures,
    UsageItem,
    UsageReport,
)
from agentmesh.shared.auth import Principal
from agentmesh.shared.db import rowcount
from agentmesh.shared.errors import AppError, Forbidden, NotFound


class InvalidUsageQuery(AppError):
    status, type, title = 422, "validation-error", "Unprocessable Content"


class BudgetNotFound(NotFound):
    type, title = "budget-not-found", "Budget not found"


def month_start(day: date) -> datetime:
    return datetime.combine(day.replace(day=1), time.min, UTC)


def next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def parse_bound(value: str | None, name: str, *, end: bool) -> datetime | None:
    """A ``from``/``to`` query value: a date (a whole UTC day; ``to`` includes it) or an
    ISO 8601 datetime (UTC when it has no offset)."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            start = datetime.combine(date.fromisoformat(value), time.min, UTC)
            return start + timedelta(days=1) if end else start
        # An unencoded "+01:00" offset arrives as " 01:00".
        moment = datetime.fromisoformat(value.replace(" ", "+") if "T" in value else value)
    except ValueError as exc:
        raise InvalidUsageQuery(
            f"{name}: expected a date (YYYY-MM-DD) or an ISO 8601 datetime.",
            extra={"errors": [{"loc": ["query", name], "msg": "invalid date or datetime",
                               "type": "datetime_parsing"}]},
        ) from exc  # fmt: skip
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def usage_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """Default: the current calendar month (UTC), or the month ``to`` falls in."""
    if end is None:
        end = next_month(month_start(start.date() if start else datetime.now(UTC).date()))
    if start is None:
        start = month_start((end - timedelta(microseconds=1)).astimezone(UTC).date())
    if start >= end:
        raise InvalidUsageQuery("from must be before to (a date as to includes that day).")
    return start, end


def usage_subject(caller: Principal, user_id: uuid.UUID | None) -> uuid.UUID:
    """Whose usage the caller may see: their own, or anyone's for an admin."""
    if user_id is None or user_id == caller.user_id:
        return caller.user_id
    if not caller.is_admin:
        raise Forbidden("Only an admin can see another user's usage or budget.")
    return user_id


def _figure_columns() -> tuple[Any, ...]:
    return (
        func.count().label("runs"),
        func.coalesce(func.sum(Run.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(Run.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(Run.cost_usd), 0).label("cost_usd"),
        func.avg(Run.latency_ms).label("avg_latency_ms"),
        func.avg(Run.ttft_ms).label("avg_ttft_ms"),
    )


def _figures(row: Any) -> dict[str, Any]:
    def ms(value: Any) -> float | None:
        return None if value is None else round(float(value), 3)

    return {
        "runs": row.runs, "input_tokens": int(row.input_tokens),
        "output_tokens": int(row.output_tokens),
        "total_tokens": int(row.input_tokens) + int(row.output_tokens),
        "cost_usd": Decimal(row.cost_usd), "avg_latency_ms": ms(row.avg_latency_ms),
        "avg_ttft_ms": ms(row.avg_ttft_ms),
    }  # fmt: skip


async def usage_report(
    session: AsyncSession, user_id: uuid.UUID, start: datetime, end: datetime, group_by: GroupBy
) -> UsageReport:
    """The user's finished runs in ``[start, end)``, grouped, with totals."""
    key: Label[Any] = {
        "agent": cast(Run.agent_id, Text),
        "model": Run.model,
        "day": func.to_char(func.timezone("UTC", Run.created_at), "YYYY-MM-DD"),
    }[group_by].label("key")
    runs = (Run.user_id == user_id, Run.created_at >= start, Run.created_at < end,
            Run.finished_at.is_not(None))  # fmt: skip
    groups = await session.execute(
        select(key, *_figure_columns()).where(*runs).group_by(key).order_by(key)
    )
    totals = (await session.execute(select(*_figure_columns()).where(*runs))).one()
    return UsageReport.model_validate({
        "user_id": user_id, "from": start, "to": end, "group_by": group_by,
        "items": [UsageItem(key=row.key, **_figures(row)) for row in groups],
        "totals": UsageFigures(**_figures(totals)),
    })  # fmt: skip


# Spend recorded before the budget existed counts: seed this month from the runs. A row
# already there is authoritative (it has tracked every run since), so nothing changes.
SEED_SPEND = text("""
INSERT INTO chat.budget_spend (user_id, month, tokens, cost_usd, reserved_tokens)
SELECT :user_id, :month, COALESCE(SUM(input_tokens + output_tokens), 0),
       COALESCE(SUM(cost_usd), 0), 0
FROM chat.runs WHERE user_id = :user_id AND created_at >= :since
ON CONFLICT (user_id, month) DO NOTHING
""")


async def set_budget(session: AsyncSession, user_id: uuid.UUID, body: BudgetIn) -> BudgetOut:
    """Create or replace the user's monthly limits."""
    limits = {"monthly_tokens": body.monthly_tokens, "monthly_cost_usd": body.monthly_cost_usd}
    statement = insert(Budget).values(user_id=user_id, **limits)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[Budget.user_id], set_={**limits, "updated_at": func.now()}))  # fmt: skip
    month = this_month()
    await session.execute(SEED_SPEND, {"user_id": user_id, "month": month,
                                       "since": month_start(month)})  # fmt: skip
    return await get_budget(session, user_id)


async def get_budget(session: AsyncSession, user_id: uuid.UUID) -> BudgetOut:
    """The limits with this month's spend and in-flight reservations."""
    month = this_month()
    row = (await session.execute(
        select(Budget, BudgetSpend)
        .join(BudgetSpend, (BudgetSpend.user_id == Budget.user_id) & (BudgetSpend.month == month),
              isouter=True)
        .where(Budget.user_id == user_id)
        .execution_options(populate_existing=True)
    )).first()  # fmt: skip
    if row is None:
        raise BudgetNotFound("This user has no budget.")
    budget, spend = row
    return BudgetOut(
        user_id=user_id, monthly_tokens=budget.monthly_tokens,
        monthly_cost_usd=budget.monthly_cost_usd, month=month,
        spent_tokens=spend.tokens if spend else 0,
        spent_cost_usd=spend.cost_usd if spend else Decimal(0),
        reserved_tokens=spend.reserved_tokens if spend else 0, updated_at=budget.updated_at,
    )  # fmt: skip


async def delete_budget(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Remove the limits. The spend rows go too: they are only kept up to date while a
    budget exists, so a budget set later seeds afresh from the runs."""
    deleted = await session.execute(delete(Budget).where(Budget.user_id == user_id))
    if not rowcount(deleted):
        raise BudgetNotFound("This user has no budget.")
    await session.execute(delete(BudgetSpend).where(BudgetSpend.user_id == user_id))

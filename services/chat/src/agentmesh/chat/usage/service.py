"""Usage reports over the ``runs`` table, and the admin side of monthly budgets.

A run's usage lives on its row, so a report is one ``GROUP BY`` over a workspace's runs
(the caller's own, or every member's). Budgets (a member's in a workspace, or a whole
workspace's: ``user_id`` ``WHOLE_WORKSPACE``) are enforced by ``runs.repository.reserve_budget``;
here they are set, read and removed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.models import WHOLE_WORKSPACE
from agentmesh.chat.runs.repository import this_month
from agentmesh.chat.usage import repository
from agentmesh.chat.usage.schemas import (
    BudgetIn,
    BudgetOut,
    GroupBy,
    UsageFigures,
    UsageItem,
    UsageReport,
)
from agentmesh.shared.access import Access
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
            extra={
                "errors": [
                    {
                        "loc": ["query", name],
                        "msg": "invalid date or datetime",
                        "type": "datetime_parsing",
                    }
                ]
            },
        ) from exc
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


class WorkspaceNotFound(NotFound):
    type, title = "workspace-not-found", "Workspace not found"


class MemberNotFound(NotFound):
    type, title = "member-not-found", "Member not found"


def usage_workspace(caller: Access, workspace_id: uuid.UUID | None) -> uuid.UUID:
    """The workspace a report covers: the token's; any for a platform admin."""
    if workspace_id is None or workspace_id == caller.workspace_id:
        return caller.workspace_id
    if not caller.is_platform_admin:
        raise WorkspaceNotFound("No such workspace of yours; switch to it first.")
    return workspace_id


def usage_subject(caller: Access, user_id: uuid.UUID | None, group_by: str) -> uuid.UUID | None:
    """Whose usage the caller may see: their own; another member's, or every member's
    (None, ``group_by=member``), for the workspace's admins and owners."""
    if group_by == "member":
        if not caller.at_least("admin"):
            raise Forbidden("Usage by member is for the workspace's admins and owners.")
        return user_id
    if user_id is None or user_id == caller.user_id:
        return caller.user_id
    if not caller.at_least("admin"):
        raise Forbidden("Only the workspace's admins and owners see another member's usage.")
    return user_id


def _figures(row: Any) -> dict[str, Any]:
    def ms(value: Any) -> float | None:
        return None if value is None else round(float(value), 3)

    return {
        "runs": row.runs,
        "input_tokens": int(row.input_tokens),
        "output_tokens": int(row.output_tokens),
        "total_tokens": int(row.input_tokens) + int(row.output_tokens),
        "cost_usd": Decimal(row.cost_usd),
        "avg_latency_ms": ms(row.avg_latency_ms),
        "avg_ttft_ms": ms(row.avg_ttft_ms),
    }


async def usage_report(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    user_id: uuid.UUID | None,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
) -> UsageReport:
    """The finished runs in ``[start, end)`` of the workspace (of ``user_id`` only, unless
    None), grouped, with totals."""
    groups, totals = await repository.usage(session, workspace_id, user_id, start, end, group_by)
    return UsageReport.model_validate(
        {
            "workspace_id": workspace_id,
            "user_id": user_id,
            "from": start,
            "to": end,
            "group_by": group_by,
            "items": [UsageItem(key=row.key, **_figures(row)) for row in groups],
            "totals": UsageFigures(**_figures(totals)),
        }
    )


def _who(user_id: uuid.UUID) -> uuid.UUID | None:
    return None if user_id == WHOLE_WORKSPACE else user_id


async def set_budget(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID, body: BudgetIn
) -> BudgetOut:
    """Create or replace the monthly limits of a member in a workspace (``user_id``
    ``WHOLE_WORKSPACE``: of the whole workspace)."""
    await repository.upsert_budget(
        session,
        workspace_id,
        user_id,
        monthly_tokens=body.monthly_tokens,
        monthly_cost_usd=body.monthly_cost_usd,
    )
    month = this_month()
    await repository.seed_spend(session, workspace_id, user_id, month, month_start(month))
    return await get_budget(session, workspace_id, user_id)


async def get_budget(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> BudgetOut:
    """The limits with this month's spend and in-flight reservations."""
    month = this_month()
    row = await repository.budget_with_spend(session, workspace_id, user_id, month)
    if row is None:
        raise BudgetNotFound("No budget is set here.")
    budget, spend = row
    return BudgetOut(
        workspace_id=workspace_id,
        user_id=_who(user_id),
        monthly_tokens=budget.monthly_tokens,
        monthly_cost_usd=budget.monthly_cost_usd,
        month=month,
        spent_tokens=spend.tokens if spend else 0,
        spent_cost_usd=spend.cost_usd if spend else Decimal(0),
        reserved_tokens=spend.reserved_tokens if spend else 0,
        updated_at=budget.updated_at,
    )


async def delete_budget(session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Remove the limits. The spend rows go too: they are only kept up to date while a
    budget exists, so a budget set later seeds afresh from the runs."""
    if not await repository.delete_budget(session, workspace_id, user_id):
        raise BudgetNotFound("No budget is set here.")

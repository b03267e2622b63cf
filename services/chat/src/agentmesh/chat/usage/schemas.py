"""Usage reports and budgets, in and out."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GroupBy = Literal["agent", "model", "day", "member"]


class UsageFigures(BaseModel):
    """Sums over the finished runs of a group (or of the whole range)."""

    runs: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    #: USD, from the price table at the time of each run.
    cost_usd: Decimal
    avg_latency_ms: float | None
    avg_ttft_ms: float | None


class UsageItem(UsageFigures):
    #: The agent id, the model name, the UTC day (``YYYY-MM-DD``), or the member's user id.
    key: str


class UsageReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    #: The workspace the runs belong to (the token's).
    workspace_id: uuid.UUID
    #: Whose runs; null with ``group_by=member`` (every member of the workspace).
    user_id: uuid.UUID | None
    #: Inclusive.
    from_: datetime = Field(alias="from")
    #: Exclusive.
    to: datetime
    group_by: GroupBy
    items: list[UsageItem]
    totals: UsageFigures


class BudgetIn(BaseModel):
    """Monthly limits; null (or left out) for no limit of that kind."""

    model_config = ConfigDict(extra="forbid")

    monthly_tokens: int | None = Field(default=None, gt=0, le=2_147_483_647, examples=[200_000])
    monthly_cost_usd: Decimal | None = Field(
        default=None, ge=0, max_digits=14, decimal_places=6, examples=["25.00"]
    )


class BudgetOut(BaseModel):
    workspace_id: uuid.UUID
    #: The member the budget limits; null for the whole workspace's budget.
    user_id: uuid.UUID | None
    monthly_tokens: int | None
    monthly_cost_usd: Decimal | None
    #: The calendar month (UTC) the spend below belongs to, as its first day.
    month: date
    spent_tokens: int
    spent_cost_usd: Decimal
    #: Tokens held by runs still in flight; a run starts while spent + reserved < limit.
    reserved_tokens: int
    updated_at: datetime

"""``/api/v1/usage`` (your figures in your workspace; every member's for its admins) and
``/api/v1/budgets`` (platform admins: a user's budget in their personal workspace)."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from agentmesh.chat.usage import service
from agentmesh.chat.usage.schemas import BudgetIn, BudgetOut, GroupBy, UsageReport
from agentmesh.shared.access import Access, access_to
from agentmesh.shared.auth import AdminPrincipal, CurrentPrincipal
from agentmesh.shared.db import Session
from agentmesh.shared.errors import Forbidden

logger = logging.getLogger("agentmesh.chat.usage")

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])
budgets_router = APIRouter(prefix="/api/v1/budgets", tags=["budgets"])
NO_BUDGET: dict[int | str, dict[str, Any]] = {404: {"description": "The user has no budget"}}


FOREIGN: dict[int | str, dict[str, Any]] = {
    403: {"description": "Someone else's, and you are not an admin"}
}
USAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "Another member's usage, or group_by=member, and you are not an "
        "admin or owner of the workspace; or an API key without usage:read"
    },
    404: {"description": "workspace_id of another workspace (platform admins only)"},
}
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: {"description": "Admins only"}}


@router.get("", response_model=UsageReport, responses=USAGE_ERRORS)
async def get_usage(
    caller: Annotated[Access, access_to("viewer", "usage:read")],
    session: Session,
    from_: Annotated[
        str | None,
        Query(alias="from", description="Date or datetime, inclusive", examples=["2025-01-01"]),
    ] = None,
    to: Annotated[
        str | None,
        Query(description="Exclusive datetime, or a date included whole", examples=["2025-01-31"]),
    ] = None,
    group_by: GroupBy = "day",
    user_id: Annotated[
        uuid.UUID | None, Query(description="Another member's (the workspace's admins and owners)")
    ] = None,
    workspace_id: Annotated[
        uuid.UUID | None, Query(description="Another workspace's (platform admins)")
    ] = None,
) -> UsageReport:
    """Tokens, cost, latency and time to first token of your finished runs in the
    workspace your token is bound to, grouped by ``agent``, ``model`` or UTC ``day``, with
    totals. The range defaults to this calendar month (UTC). ``group_by=member`` gives
    every member's totals (admins and owners of the workspace), as does ``user_id`` for one
    member. Any member (viewer and up); API keys need ``usage:read``."""
    workspace = service.usage_workspace(caller, workspace_id)
    subject = service.usage_subject(caller, user_id, group_by)
    start, end = service.usage_range(
        service.parse_bound(from_, "from", end=False), service.parse_bound(to, "to", end=True)
    )
    return await service.usage_report(session, workspace, subject, start, end, group_by)


@budgets_router.put("/{user_id}", response_model=BudgetOut, responses=ADMIN_ONLY)
async def put_budget(
    user_id: uuid.UUID, body: BudgetIn, admin: AdminPrincipal, session: Session
) -> BudgetOut:
    """Set a user's monthly token and/or cost limit in their personal workspace (platform
    admins; ``/api/v1/workspaces/{id}/members/{user_id}/budget`` sets one in any
    workspace). A run that would start with this month's spend plus in-flight reservations
    at the limit is refused with 402. Spend recorded earlier this month counts."""
    budget = await service.set_budget(session, user_id, user_id, body)
    logger.info(
        "budget set",
        extra={
            "user_id": str(user_id),
            "admin_id": str(admin.user_id),
            "monthly_tokens": body.monthly_tokens,
            "monthly_cost_usd": str(body.monthly_cost_usd),
        },
    )
    return budget


@budgets_router.get("/{user_id}", response_model=BudgetOut, responses={**NO_BUDGET, **FOREIGN})
async def read_budget(user_id: uuid.UUID, caller: CurrentPrincipal, session: Session) -> BudgetOut:
    """A user's limits in their personal workspace with this month's spend and in-flight
    reservations (platform admins, or the user themself)."""
    if user_id != caller.user_id and not caller.is_admin:
        raise Forbidden("Only an admin can see another user's budget.")
    return await service.get_budget(session, user_id, user_id)


@budgets_router.delete(
    "/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NO_BUDGET, **ADMIN_ONLY}
)
async def remove_budget(user_id: uuid.UUID, admin: AdminPrincipal, session: Session) -> Response:
    """Remove a user's budget in their personal workspace (platform admins): their runs
    there are no longer limited."""
    await service.delete_budget(session, user_id, user_id)
    logger.info("budget removed", extra={"user_id": str(user_id), "admin_id": str(admin.user_id)})
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""``/api/v1/workspaces/{id}/budget`` and ``/api/v1/workspaces/{id}/members/{user_id}/budget``.

Chat enforces budgets, so these two paths of the workspace tree are chat's (the gateway
sends exactly them here; the rest of ``/api/v1/workspaces`` is identity's). A run starts
only while the member's budget in the workspace and the workspace's budget both allow it.

Who may do what:
- the workspace's budget: set by platform admins; read by the workspace's members.
- a member's budget: set by the workspace's admins and owners (and platform admins); read
  by them and by the member themself.
A workspace other than the one the token is bound to is a 404 (platform admins excepted).
API keys need ``workspace:admin`` to set a budget, ``usage:read`` to read one.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter

from agentmesh.chat.models import WHOLE_WORKSPACE
from agentmesh.chat.usage import service
from agentmesh.chat.usage.schemas import BudgetIn, BudgetOut
from agentmesh.shared.access import Access, access_to
from agentmesh.shared.db import Session
from agentmesh.shared.deps import AppMemberships
from agentmesh.shared.errors import Forbidden
from agentmesh.shared.memberships import MembershipView

logger = logging.getLogger("agentmesh.chat.usage")

router = APIRouter(prefix="/api/v1/workspaces", tags=["budgets"])
Reader = Annotated[Access, access_to("viewer", "usage:read")]
SET: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not allowed to set it, or an API key without workspace:admin"},
    404: {"description": "Another workspace, or not a member of it"},
}
READ: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "Another member's, and you are not an admin or owner of the "
        "workspace; or an API key without usage:read"
    },
    404: {"description": "No budget set, another workspace, or not a member of it"},
}


def _in_workspace(caller: Access, workspace_id: uuid.UUID) -> None:
    """404 unless the caller's token is bound to ``workspace_id`` (or is a platform admin's)."""
    if workspace_id != caller.workspace_id and not caller.is_platform_admin:
        raise service.WorkspaceNotFound("No such workspace of yours; switch to it first.")


def _member(memberships: MembershipView, workspace_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """404 when the membership view knows ``user_id`` is not a member of the workspace."""
    if memberships.ready and memberships.role(workspace_id, user_id) is None:
        raise service.MemberNotFound("That user is not a member of this workspace.")


def _log(
    what: str, workspace_id: uuid.UUID, user_id: uuid.UUID | None, caller: Access, body: BudgetIn
) -> None:
    logger.info(
        what,
        extra={
            "workspace_id": str(workspace_id),
            "user_id": str(user_id),
            "by": str(caller.user_id),
            "monthly_tokens": body.monthly_tokens,
            "monthly_cost_usd": str(body.monthly_cost_usd),
        },
    )


@router.put("/{workspace_id}/budget", response_model=BudgetOut, responses=SET)
async def put_workspace_budget(
    workspace_id: uuid.UUID,
    body: BudgetIn,
    session: Session,
    caller: Annotated[Access, access_to("viewer", "workspace:admin")],
) -> BudgetOut:
    """Set the workspace's monthly token and/or cost limit, over every member's runs
    together (platform admins). Null clears a limit."""
    if not caller.is_platform_admin:
        raise Forbidden("Only a platform admin sets a workspace's budget.")
    budget = await service.set_budget(session, workspace_id, WHOLE_WORKSPACE, body)
    _log("workspace budget set", workspace_id, None, caller, body)
    return budget


@router.get("/{workspace_id}/budget", response_model=BudgetOut, responses=READ)
async def get_workspace_budget(
    workspace_id: uuid.UUID, caller: Reader, session: Session
) -> BudgetOut:
    """The workspace's limits with this month's spend and in-flight reservations (its
    members, viewer and up)."""
    _in_workspace(caller, workspace_id)
    return await service.get_budget(session, workspace_id, WHOLE_WORKSPACE)


@router.put("/{workspace_id}/members/{user_id}/budget", response_model=BudgetOut, responses=SET)
async def put_member_budget(
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    body: BudgetIn,
    session: Session,
    memberships: AppMemberships,
    caller: Annotated[Access, access_to("admin", "workspace:admin")],
) -> BudgetOut:
    """Set a member's monthly limits in the workspace (the workspace's admins and owners,
    platform admins). Null clears a limit. The member's runs there need both this budget
    and the workspace's to allow them."""
    _in_workspace(caller, workspace_id)
    _member(memberships, workspace_id, user_id)
    budget = await service.set_budget(session, workspace_id, user_id, body)
    _log("member budget set", workspace_id, user_id, caller, body)
    return budget


@router.get("/{workspace_id}/members/{user_id}/budget", response_model=BudgetOut, responses=READ)
async def get_member_budget(
    workspace_id: uuid.UUID, user_id: uuid.UUID, caller: Reader, session: Session
) -> BudgetOut:
    """A member's limits in the workspace with this month's spend and reservations (the
    member themself, the workspace's admins and owners, platform admins)."""
    _in_workspace(caller, workspace_id)
    if user_id != caller.user_id and not caller.at_least("admin"):
        raise Forbidden("Only the workspace's admins and owners see another member's budget.")
    return await service.get_budget(session, workspace_id, user_id)

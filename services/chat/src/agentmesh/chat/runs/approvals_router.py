"""``POST /api/v1/runs/{id}/approvals``: a person decides on the tool call a run waits for."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from agentmesh.chat.deps import AppState
from agentmesh.chat.models import Run
from agentmesh.chat.runs.approvals import Resume
from agentmesh.chat.runs.executor import RunPlan
from agentmesh.chat.runs.repository import CLAIM
from agentmesh.chat.runs.router import RunOut, settled
from agentmesh.chat.runs.sse import event_stream
from agentmesh.shared.access import Access, access_to
from agentmesh.shared.db import Session
from agentmesh.shared.errors import AppError, NotFound
from agentmesh.shared.openapi import sse_content

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
Chatter = Annotated[Access, access_to("viewer", "chat")]


class NotAwaitingApproval(AppError):
    status, type, title = 409, "run-not-awaiting-approval", "Conflict"


class UnknownCall(AppError):
    status, type, title = 422, "approval-call-unknown", "Unprocessable Content"


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=200, description="The call's ``call_id``")
    approve: bool
    reason: str | None = Field(
        default=None, max_length=2000, description="Told to the model when denied"
    )
    stream: bool = Field(default=False, description="The rest of the run as text/event-stream")


def may_decide(caller: Access, run: Run) -> bool:
    """The conversation's owner, an admin of its workspace, or a platform admin."""
    if caller.is_platform_admin:
        return True
    return run.workspace_id == caller.workspace_id and (
        run.user_id == caller.user_id or caller.at_least("admin")
    )


@router.post(
    "/{run_id}/approvals",
    response_model=RunOut,
    responses={
        200: {
            "content": sse_content(),
            "description": "The run once it ended or "
            "paused again; with stream: true, its events from here on",
        },
        404: {"description": "No such run, or not yours to decide"},
        409: {"description": "The run is not waiting for an approval"},
        422: {"description": "Not the call the run waits for"},
    },
)
async def decide(
    run_id: uuid.UUID, body: Decision, caller: Chatter, session: Session, state: AppState
) -> Any:
    """Approve or deny the tool call a run waits for (status ``requires_action``). Approved,
    the tool runs; denied, the model is told so (with ``reason``) and goes on without it.
    Any replica can decide; the run's events go on on ``GET /runs/{id}/events``, their ids
    after the pause's."""
    await settled(state.hub, run_id)
    run = await session.get(Run, run_id)
    if run is None or not may_decide(caller, run):
        raise NotFound("No such run.")
    row = (await session.execute(CLAIM, {"run_id": run_id, "call_id": body.call_id})).one()
    if not row.claimed:
        await session.rollback()
        current = await session.get(Run, run_id, populate_existing=True)
        if current is None or current.status != "requires_action":
            raise NotAwaitingApproval("This run is not waiting for an approval.")
        raise UnknownCall(
            "The run waits for another call; see its tool.approval_required event.",
            extra={"field": "call_id"},
        )
    await session.commit()
    decision = {
        "decided_by": str(caller.user_id),
        "approve": body.approve,
        "reason": body.reason,
        "at": datetime.now(UTC).isoformat(),
    }
    saved: dict[str, Any] = row.state
    plan = RunPlan(
        run_id=run.id,
        workspace_id=run.workspace_id,
        user_id=run.user_id,
        agent_id=run.agent_id,
        agent_version=run.agent_version,
        config=saved["config"],
        history=[],
        conversation_id=run.conversation_id,
        parent_id=uuid.UUID(saved["parent_id"]) if saved.get("parent_id") else None,
        reserved_tokens=run.reserved_tokens,
        temperature=saved.get("temperature"),
        max_tokens=saved.get("max_tokens"),
        title_seed=saved.get("title_seed"),
        resume=Resume(state=saved, decision=decision, last_event_id=run.last_event_id),
    )
    channel = state.executor.start(plan)
    if body.stream:
        events = state.hub.follow_local(channel, channel.base)
        headers = {"X-Run-Id": str(run.id)}
        return event_stream(events, state.settings.heartbeat_seconds, headers)
    assert channel.task is not None
    await asyncio.shield(channel.task)  # a dropped client doesn't stop the run
    await session.refresh(run)
    return RunOut.model_validate(run)

"""``/api/v1/runs``: a run's state, cancelling it, and replaying/following its events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.agents_client import nats_client
from agentmesh.chat.deps import AppHub, AppState
from agentmesh.chat.models import Run
from agentmesh.chat.runs import repository
from agentmesh.chat.runs.approvals import cancel_pause
from agentmesh.chat.runs.hub import RunEvent, RunHub
from agentmesh.chat.runs.sse import event_stream
from agentmesh.chat.state import ChatState
from agentmesh.shared.access import Access, access_to
from agentmesh.shared.db import Session
from agentmesh.shared.errors import NotFound
from agentmesh.shared.openapi import sse_content

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
#: Any member of the workspace (viewer and up) for their own runs; API keys need ``chat``.
Chatter = Annotated[Access, access_to("viewer", "chat")]
NOT_YOURS: dict[int | str, dict[str, Any]] = {
    403: {"description": "An API key without the chat scope"},
    404: {"description": "No such run, or not yours"},
}
CANCEL_SUBJECT = "chat.control.cancel"
#: A cancel for a run of another replica is a core NATS message, which that replica can
#: miss (a reconnect, a message dropped on the way): while the run's row still says
#: ``running``, it is sent again after these delays (a repeated cancel is a no-op there).
CANCEL_RESEND_SECONDS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
logger = logging.getLogger("agentmesh.chat.runs")


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    workspace_id: uuid.UUID
    conversation_id: uuid.UUID | None
    agent_id: uuid.UUID
    agent_version: int
    status: str
    error: dict[str, Any] | None
    model: str = Field(description="The model that answered (or, failed, was tried last)")
    provider: str
    fallback_index: int | None = Field(
        default=None,
        description="Null: the agent's own model answered; else its fallback's "
        "position in the agent's `fallbacks`",
    )
    user_message_id: uuid.UUID | None
    assistant_message_id: uuid.UUID | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    latency_ms: float | None
    ttft_ms: float | None
    created_at: datetime
    finished_at: datetime | None


async def _owned(session: AsyncSession, caller: Access, run_id: uuid.UUID) -> Run:
    """The caller's own run in their token's workspace (any for a platform admin)."""
    run = await session.get(Run, run_id)
    if run is None or not (
        caller.is_platform_admin
        or (run.workspace_id == caller.workspace_id and run.user_id == caller.user_id)
    ):
        raise NotFound("No such run.")
    return run


@router.get("/{run_id}", response_model=RunOut, responses=NOT_YOURS)
async def get_run(run_id: uuid.UUID, caller: Chatter, session: Session, hub: AppHub) -> RunOut:
    """A run's state: ``running``, ``requires_action`` (waiting for a person to approve a
    tool call), ``completed``, ``failed``, ``cancelled`` or ``expired``, with usage."""
    await settled(hub, run_id)
    return RunOut.model_validate(await _owned(session, caller, run_id))


@router.post(
    "/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunOut,
    responses=NOT_YOURS,
)
async def cancel(run_id: uuid.UUID, caller: Chatter, session: Session, state: AppState) -> RunOut:
    """Stop generating. What was produced is kept, marked ``cancelled``. Works from any
    replica: the one running the run gets the request over NATS."""
    await settled(state.hub, run_id)
    run = await _owned(session, caller, run_id)
    if run.status == "requires_action":  # no task to stop: the pause ends here
        await session.commit()
        if await cancel_pause(state, run_id):
            await session.refresh(run)
        return RunOut.model_validate(run)
    if run.status == "running" and not cancel_local(state.hub, run_id):
        await _publish_cancel(state, run_id)
        state.hub.keep(asyncio.create_task(_resend_cancel(state, run_id)))
    return RunOut.model_validate(run)


async def _publish_cancel(state: ChatState, run_id: uuid.UUID) -> None:
    nc = nats_client(state.runtime.broker)
    if nc is not None and nc.is_connected:
        await nc.publish(f"{CANCEL_SUBJECT}.{run_id}", b"")


async def _resend_cancel(state: ChatState, run_id: uuid.UUID) -> None:
    """Send the cancel again while the run still runs (see ``CANCEL_RESEND_SECONDS``)."""
    try:
        for delay in CANCEL_RESEND_SECONDS:
            await asyncio.sleep(delay)
            async with state.reader.connect() as reads:
                if await repository.run_status(reads, run_id) != "running":
                    return
            await _publish_cancel(state, run_id)
    except Exception:  # the first message was sent; the orphan sweep ends a run left behind
        logger.warning("cancel not sent again", exc_info=True, extra={"run_id": str(run_id)})


def cancel_local(hub: RunHub, run_id: uuid.UUID) -> bool:
    """Cancel ``run_id`` if this replica runs it (once: a repeated cancel is a no-op)."""
    channel = hub.local.get(run_id)
    if channel is None or channel.task is None or channel.task.done():
        return False
    if not channel.cancel_requested:
        channel.cancel_requested = True
        channel.task.cancel()
        logger.info("run cancelled on request", extra={"run_id": str(run_id)})
    return True


async def settled(hub: RunHub, run_id: uuid.UUID) -> None:
    """Wait for the commit of a run this replica just started (its row may not be there
    yet while the model call runs alongside it); a failed commit leaves no row: 404."""
    channel = hub.local.get(run_id)
    if channel is not None and channel.recorded is not None and not channel.recorded.done():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(channel.recorded), timeout=30)


@router.get(
    "/{run_id}/events",
    responses={
        **NOT_YOURS,
        200: {"content": sse_content()},
    },
)
async def events(
    run_id: uuid.UUID,
    caller: Chatter,
    session: Session,
    state: AppState,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Any:
    """Replay a run's events, then follow them until ``done``. Send ``Last-Event-ID`` to
    get only what came after it; any chat replica can serve this."""
    await settled(state.hub, run_id)
    run = await _owned(session, caller, run_id)
    try:
        after = max(0, int(last_event_id or 0))
    except ValueError:
        after = 0
    channel = state.hub.local.get(run_id)
    if (
        channel is not None
        and channel.base <= after
        and (not channel.finished or after < channel.base + len(channel.events))
    ):  # (else: events of before a pause, or of a part after this channel's end)
        source: AsyncIterator[RunEvent | None] = state.hub.follow_local(channel, after)
    else:
        source = _from_stream(state, run, after)
    await session.commit()  # release the connection before a long stream
    return event_stream(source, state.settings.heartbeat_seconds)


async def _from_stream(state: ChatState, run: Run, after: int) -> AsyncIterator[RunEvent | None]:
    """The stream's events; when it has none left (expired) for a finished run, the end
    of the run rebuilt from its row."""
    seen = after
    async for event in state.hub.follow_stream(
        run.id, after, idle_timeout=state.settings.heartbeat_seconds
    ):
        if event is not None:
            seen = event.id
            yield event
            continue
        yield None
        async with state.sessionmaker() as session:
            current = await session.get(Run, run.id)
        if current is not None and current.status != "running":
            if seen < current.last_event_id:
                for event in _rebuilt_end(current):
                    if event.id > seen:
                        yield event
            return  # a finished run has nothing more to come


def _rebuilt_end(run: Run) -> list[RunEvent]:
    usage = {
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "total_tokens": run.input_tokens + run.output_tokens,
    }
    end = run.last_event_id
    if run.status == "completed":
        last = RunEvent(
            end - 1,
            "message.completed",
            {
                "message_id": run.assistant_message_id,
                "usage": usage,
                "status": "completed",
                "model": run.model,
                "provider": run.provider,
                "fallback_index": run.fallback_index,
            },
        )
    elif run.status == "cancelled":
        last = RunEvent(
            end - 1, "run.cancelled", {"message_id": run.assistant_message_id, "usage": usage}
        )
    elif run.status == "expired":  # waited for an approval too long (runs.approvals)
        last = RunEvent(end - 1, "run.expired", run.error or {})
    else:
        last = RunEvent(end - 1, "run.failed", run.error or {})
    return [last, RunEvent(end, "done", {"status": run.status})]

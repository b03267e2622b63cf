"""``/v1/responses``: OpenAI's Responses API over the caller's agents, kept in Postgres.

The official ``openai`` client (``client.responses.*``) and the OpenAI Agents SDK's default
``OpenAIResponsesModel`` work against it unmodified (``base_url=<gateway>/v1``). A stored
response belongs to the caller's workspace: any member of it may read it by id (another
workspace's is a 404). Errors use OpenAI's shape.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from agentmesh.chat.agents_client import nats_client
from agentmesh.chat.deps import AppState
from agentmesh.chat.openai_compat.completions import RunFailed
from agentmesh.chat.openai_compat.errors import OpenAIRoute
from agentmesh.chat.openai_compat.router import ERRORS
from agentmesh.chat.openai_compat.service import InvalidRequest
from agentmesh.chat.responses import repository, service
from agentmesh.chat.responses.params import ResponseRequest
from agentmesh.chat.responses.stream import replay, response_events
from agentmesh.chat.runs.router import CANCEL_SUBJECT, cancel_local, settled
from agentmesh.chat.runs.sse import event_stream
from agentmesh.shared.access import Access, access_to
from agentmesh.shared.db import Session
from agentmesh.shared.openapi import sse_content

router = APIRouter(prefix="/v1/responses", tags=["openai"], route_class=OpenAIRoute)
Caller = Annotated[Access, access_to("viewer", "chat")]


@router.post(
    "",
    responses={
        **ERRORS,
        200: {
            "description": "A response; with stream: true, the Responses API's events",
            "content": sse_content(),
        },
    },
)
async def create_response(
    body: ResponseRequest, access: Caller, session: Session, state: AppState
) -> Any:
    """Run an agent (``model``: its id or slug) on ``input``, as OpenAI's Responses API does.

    ``instructions`` come after the agent's own; ``previous_response_id`` continues a
    stored response (its items, not its instructions); ``tools`` of type ``function`` are
    the client's (calls come back as ``function_call`` items, answered with
    ``function_call_output`` items); ``store: false`` keeps nothing once it ends. Budgets
    apply (402 ``insufficient_quota``). A parameter OpenAI does not define is a 400 naming
    it; one defined but not honoured here is a 400 unless at its neutral value."""
    started = await service.start(state, session, access, body)
    service.run(state, started)
    await session.commit()  # no connection held for the run
    headers = {"X-Run-Id": str(started.plan.run_id)}
    if body.background and not body.stream:  # it runs on, whoever listens
        assert started.written is not None  # a GET right after this one finds it
        await asyncio.shield(started.written)
        return JSONResponse(service.as_object(started.row), headers=headers)
    if body.stream:
        return event_stream(
            response_events(state.hub, started),  # type: ignore[arg-type]
            state.settings.heartbeat_seconds,
            headers,
        )
    assert started.finished is not None and started.channel is not None
    row = await asyncio.shield(started.finished)  # a dropped client doesn't stop the run
    if row["status"] == "failed":
        assert started.channel.task is not None
        raise RunFailed((await started.channel.task).error or {})
    return JSONResponse(service.as_object(row), headers=headers)


@router.get(
    "/{id}",
    responses={
        **ERRORS,
        200: {
            "description": "The response; with stream=true, its events",
            "content": sse_content(),
        },
    },
)
async def get_response(
    id: str,
    access: Caller,
    session: Session,
    state: AppState,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0)] = None,
) -> Any:
    """A stored response of your workspace, as it stands (queued, in progress or ended).
    With ``stream=true``, its events after ``starting_after`` (a sequence number), then
    live until it ends: a dropped stream resumes here, on any replica."""
    row, run_status = await service.load(session, access, id)
    if not stream:
        return JSONResponse(service.as_object(row, run_status))
    await session.commit()  # no connection held while following the run
    after = -1 if starting_after is None else starting_after
    return event_stream(
        replay(state, access, row, run_status, after),  # type: ignore[arg-type]
        state.settings.heartbeat_seconds,
    )


@router.post("/{id}/cancel", responses=ERRORS)
async def cancel_response(id: str, access: Caller, session: Session, state: AppState) -> Any:
    """Cancel a background response that is queued or in progress, on whichever replica
    runs it; what it said so far is kept. An ended one is returned as it is."""
    row, run_status = await service.load(session, access, id)
    if not row["background"]:
        raise InvalidRequest(
            "Only background responses can be cancelled.", extra={"param": "response_id"}
        )
    await session.commit()
    if service.as_object(row, run_status)["status"] in service.FINAL:
        return JSONResponse(service.as_object(row, run_status))
    await settled(state.hub, row["id"])
    if not cancel_local(state.hub, row["id"]):
        nc = nats_client(state.runtime.broker)
        if nc is not None and nc.is_connected:
            await nc.publish(f"{CANCEL_SUBJECT}.{row['id']}", b"")
    return JSONResponse(await service.wait_final(state, access, id))


@router.delete("/{id}", responses=ERRORS)
async def delete_response(id: str, access: Caller, session: Session) -> Any:
    """Forget a stored response (its run and usage stay, without content)."""
    row, _ = await service.load(session, access, id)
    await repository.forget(session, row["id"])
    return JSONResponse({"id": id, "object": "response", "deleted": True})


@router.get("/{id}/input_items", responses=ERRORS)
async def list_input_items(
    id: str,
    access: Caller,
    session: Session,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> Any:
    """The input items of a stored response, a cursor page (``after`` an item id)."""
    row, _ = await service.load(session, access, id)
    items = list(row["input_items"])
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "has_more": len(items) > limit,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
    )

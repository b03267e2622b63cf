"""Starting a turn: a new message, a regenerated answer, or an edited question."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from langchain_core.messages import HumanMessage
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.conversations import service
from agentmesh.chat.conversations.schemas import MessageOut
from agentmesh.chat.models import new_id
from agentmesh.chat.openai_compat import passthrough
from agentmesh.chat.runs.executor import RunPlan
from agentmesh.chat.runs.repository import begin_run
from agentmesh.chat.runs.sse import event_stream
from agentmesh.chat.state import ChatState
from agentmesh.shared.access import Access
from agentmesh.shared.errors import NotFound, problem_response


async def start_turn(
    request: Request,
    state: ChatState,
    session: AsyncSession,
    caller: Access,
    conversation_id: uuid.UUID,
    *,
    content: str | None = None,
    regenerate: uuid.UUID | None = None,
    edit: uuid.UUID | None = None,
    stream: bool,
) -> Any:
    """Start the conversation's next run; ``request`` only words a failure (problem+json)."""
    # The turn's reads: Core statements built once (``repository``), one each on the
    # autocommit engine, no BEGIN or COMMIT around them (a budget's reservation and the
    # run are the request's transaction). ``turn`` is the conversation and its agent.
    async with state.reader.connect() as reads:
        turn = await service.get_for_turn(reads, caller, conversation_id)
        new_question: tuple[uuid.UUID, uuid.UUID | None, str] | None = None
        if regenerate is not None:
            answer = await service.message(reads, conversation_id, regenerate, "assistant")
            question = (
                await service.message(reads, conversation_id, answer.parent_id, "user")
                if answer.parent_id
                else None
            )
            if question is None:
                raise NotFound("That answer has no question to answer again.")
            rows = await service.branch(reads, conversation_id, leaf=question.id)
            first_turn = len(rows) <= 1
            rows, summary = service.after_summary(rows, turn)
            parent_id, history = question.id, service.to_langchain(rows)
        else:
            assert content is not None
            if edit is not None:
                old = await service.message(reads, conversation_id, edit, "user")
                before = old.parent_id
                rows = await service.branch(reads, conversation_id, leaf=before) if before else []
            else:
                rows = await service.branch(reads, conversation_id)
                before = rows[-1].id if rows else None
            parent_id = new_id()
            new_question = (parent_id, before, content)
            first_turn = not rows
            rows, summary = service.after_summary(rows, turn)
            history = [*service.to_langchain(rows), HumanMessage(content)]
    config = turn.config
    run_id = new_id()
    reserve = (
        int(config.get("max_output_tokens") or state.settings.default_reserve_tokens)
        if turn.has_budget
        else None
    )
    recorded = await begin_run(
        state,
        session,
        reserve=reserve,
        run_id=run_id,
        workspace_id=turn.workspace_id,
        user_id=turn.user_id,
        agent_id=turn.agent_id,
        agent_version=turn.version,
        model=config.get("model") or "offline",
        conversation_id=conversation_id,
        user_message=new_question,
        user_message_id=parent_id,
    )
    title_seed = content if turn.auto_title and turn.title is None and first_turn else None
    plan = RunPlan(
        run_id=run_id,
        workspace_id=turn.workspace_id,
        user_id=turn.user_id,
        agent_id=turn.agent_id,
        agent_version=turn.version,
        config=config,
        history=history,
        conversation_id=conversation_id,
        parent_id=parent_id,
        summary=summary,
        reserved_tokens=reserve or 0,
        title_seed=title_seed,
        recorded=recorded,
        prompt_vars={
            "title": turn.title,
            "variables": turn.variables,
            "timezone": turn.timezone,
        },
    )
    channel = passthrough.start(state.executor, plan)  # lean when it applies
    if recorded is not None:
        # The model request goes out before the run's row and the response's start.
        await recorded.after_request(channel.task)
        # The model call is on: end the read-only transaction, so its connection is not
        # held for the whole run.
        await session.commit()
    headers = {"X-Run-Id": str(run_id)}
    if stream:
        return event_stream(
            state.hub.follow_local(channel, 0), state.settings.heartbeat_seconds, headers
        )
    assert channel.task is not None
    outcome = await asyncio.shield(channel.task)  # a dropped client doesn't stop the run
    if outcome.status == "failed":
        error = outcome.error or {}
        return problem_response(
            request,
            status=int(error.get("status", 502)),
            slug=str(error.get("type", "run-failed")).rsplit("/", 1)[-1],
            title=error.get("title", "Run failed"),
            detail=error.get("detail"),
            headers=headers,
            extra={"run_id": str(run_id)},
        )
    if outcome.status == "requires_action":  # paused for a person's approval of a call
        pending = (outcome.pause or {}).get("calls") or [{}]
        waiting = {
            "run_id": str(run_id),
            "status": "requires_action",
            "approval_required": {
                "run_id": str(run_id),
                "call_id": pending[0].get("id"),
                "name": pending[0].get("name"),
                "args": pending[0].get("args"),
            },
        }
        return JSONResponse(waiting, status_code=202, headers=headers)
    message = MessageOut(  # as finish_run wrote it: no read back
        id=outcome.message_id,
        conversation_id=conversation_id,
        parent_id=parent_id,
        role="assistant",
        content=outcome.content,
        tool_calls=outcome.tool_calls,
        citations=outcome.citations,
        status=outcome.status,
        run_id=run_id,
        agent_version=turn.version,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        created_at=outcome.message_created_at,
    )
    return JSONResponse(message.model_dump(mode="json"), headers=headers)

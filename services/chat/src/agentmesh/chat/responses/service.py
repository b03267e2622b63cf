"""Starting a response (a run of the agent the model names) and recording how it ended.

A stored response has its row from the start (``in_progress``); the run's own task, not
the request, writes its end (``finalize``), so a dropped client changes nothing and any
replica can read the result. The runs table keeps its usage, as for every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.conversations_api import store as conversations
from agentmesh.chat.llm.memory import plan_prompt
from agentmesh.chat.llm.tokens import message_text
from agentmesh.chat.models import Conversation, new_id
from agentmesh.chat.openai_compat.service import InvalidRequest, resolve_model
from agentmesh.chat.responses import approvals, params, repository
from agentmesh.chat.responses import items as item_io
from agentmesh.chat.responses.output import outcome_items, response_id, run_id_of, server_labels
from agentmesh.chat.runs.executor import RunOutcome, RunPlan
from agentmesh.chat.runs.hub import RunChannel
from agentmesh.chat.runs.repository import OverBudget, begin_run
from agentmesh.chat.runs.templating import CALLER_INSTRUCTIONS, examples_of
from agentmesh.chat.state import ChatState
from agentmesh.shared.access import Access
from agentmesh.shared.errors import AppError, NotFound

logger = logging.getLogger("agentmesh.chat.responses")


class ResponseNotFound(NotFound):
    type, title = "not-found", "Response not found"


class InsufficientQuota(AppError):
    status, type, title = 402, "insufficient-quota", "Payment Required"


class ContextTooLong(AppError):
    status, type, title = 400, "context-length-exceeded", "Bad Request"


@dataclass
class Started:
    """A response under way: its run's plan and channel, and what its record holds."""

    plan: RunPlan
    row: dict[str, Any]
    stored: bool
    include_results: bool
    access: Access
    channel: RunChannel | None = None
    finished: asyncio.Task[dict[str, Any]] | None = field(default=None)
    #: The response's first row, written alongside the model call (not before it).
    written: asyncio.Future[None] | None = field(default=None)


async def chain_items(session: AsyncSession, access: Access, previous: str) -> list[dict]:
    """The items of ``previous`` and of the responses it continues, oldest first."""
    run_id = run_id_of(previous)
    rows = [] if run_id is None else await repository.chain(session, run_id, access.workspace_id)
    if not rows:
        raise ResponseNotFound(
            f"Previous response with id '{previous}' not found.",
            extra={"param": "previous_response_id"},
        )
    if rows[-1].status in ("queued", "in_progress"):
        raise InvalidRequest(
            f"Previous response '{previous}' is still in progress.",
            extra={"param": "previous_response_id"},
        )
    history: list[dict[str, Any]] = []
    for row in rows:
        history += list(row.input_items) + list(row.output)
    return history


def _max_tokens(body: params.ResponseRequest, config: dict[str, Any]) -> int | None:
    requested, limit = body.max_output_tokens, config.get("max_output_tokens")
    if requested is None:
        return limit
    return min(requested, limit) if limit else requested


def _check_fits(instructions: str, history: list[Any], config: dict[str, Any]) -> None:
    """With truncation disabled, a context beyond the agent's window is a 400."""
    window = int((config.get("memory") or {}).get("window_tokens", 4000))
    examples = examples_of(config)
    planned = plan_prompt(instructions, history, window_tokens=window, examples=examples)
    kept = [m for m in planned.messages if m.type != "system"][2 * len(examples) :]
    whole = len(kept) == len(history) and all(
        message_text(a) == message_text(b) for a, b in zip(kept, history, strict=True)
    )
    system = next((m for m in planned.messages if m.type == "system"), None)
    if (
        planned.dropped
        or not whole
        or (
            instructions.strip()
            and (system is None or message_text(system) != instructions.strip())
        )
    ):
        raise ContextTooLong(
            f"The input does not fit the agent's context window of {window} tokens; shorten "
            "it, or set truncation to 'auto' to drop the oldest turns.",
            extra={"param": "input"},
        )


async def start(
    state: ChatState, session: AsyncSession, access: Access, body: params.ResponseRequest
) -> Started:
    """Check the request, reserve the budget, record the run and the response: the plan."""
    params.validate(body)
    snapshot, has_budget = await resolve_model(session, access, body.model)
    new_items = item_io.normalize(body.input)
    history = (
        await chain_items(session, access, body.previous_response_id)
        if body.previous_response_id
        else []
    )
    conversation = None
    reference = params.conversation_ref(body)
    if reference is not None:
        conversation, _ = await conversations.get(session, access, reference, param="conversation")
        if not await conversations.bind(session, conversation, snapshot.agent_id):
            raise InvalidRequest(
                "This conversation is bound to another agent (model).", extra={"param": "model"}
            )
        history = await conversations.items(session, conversation)
    item_io.check_calls(history, new_items)
    answered = approvals.answered_call(history, new_items)
    system, messages = item_io.to_langchain(history + new_items)
    if not messages:
        raise InvalidRequest("The input has no message to answer.", extra={"param": "input"})
    config = dict(snapshot.config)
    # The agent's instructions first, then the request's (not carried over by a previous
    # response: only its items are), then system/developer messages of the input.
    # (The caller's are text as written: only the agent's are a template.)
    config[CALLER_INSTRUCTIONS] = caller = "\n\n".join(
        part for part in (body.instructions or "", system) if part.strip()
    )
    if body.truncation != "auto":
        whole = (config.get("instructions") or "", caller)
        _check_fits("\n\n".join(part for part in whole if part.strip()), messages, config)
    max_tokens = _max_tokens(body, config)
    run_id = new_id()
    reserve = (max_tokens or state.settings.default_reserve_tokens) if has_budget else None
    row = {
        "id": run_id,
        "workspace_id": access.workspace_id,
        "user_id": access.user_id,
        "agent_id": snapshot.agent_id,
        "model": body.model,
        "status": "queued" if body.background else "in_progress",
        "previous_response_id": run_id_of(body.previous_response_id or ""),
        "conversation_id": conversation.id if conversation else None,
        "background": bool(body.background),
        "params": {
            **params.echoed(body, config),
            "server_labels": server_labels(config),
            "include_results": "file_search_call.results" in (body.include or []),
        },
        "input_items": new_items,
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "created_at": datetime.now(UTC),
        "completed_at": None,
    }
    try:
        recorded = await begin_run(
            state,
            session,
            reserve=reserve,
            run_id=run_id,
            workspace_id=access.workspace_id,
            user_id=access.user_id,
            agent_id=snapshot.agent_id,
            agent_version=snapshot.version,
            model=config.get("model") or "offline",
        )
    except OverBudget as exc:
        raise InsufficientQuota(exc.detail) from exc
    plan = RunPlan(
        run_id=run_id,
        workspace_id=access.workspace_id,
        user_id=access.user_id,
        agent_id=snapshot.agent_id,
        agent_version=snapshot.version,
        config=config,
        history=messages,  # a decided call follows the prompt (runs.approvals.Resume)
        resume=approvals.resume(*answered, access) if answered else None,
        approvals_in_output=True,
        reserved_tokens=reserve or 0,
        temperature=body.temperature,
        max_tokens=max_tokens,
        client_tools=params.client_tools(body),
        recorded=recorded,
        tool_choice=params.tool_choice(body) if body.tools else None,
        response_format=params.response_format(body),
    )
    include = "file_search_call.results" in (body.include or [])
    return Started(plan=plan, row=row, stored=body.stored, include_results=include, access=access)


async def _write(
    state: ChatState, row: dict[str, Any], recorded: asyncio.Future[None] | None
) -> None:
    """The response's first row, once the run's own is committed: the two commits don't
    compete before the first token (a model takes longer to answer than this takes)."""
    if recorded is not None:
        with contextlib.suppress(Exception):  # a run not recorded still ends (failed)
            await asyncio.shield(recorded)
    async with state.sessionmaker() as session, session.begin():
        await repository.insert_new(session, row)


def run(state: ChatState, started: Started) -> None:
    """Start the run, its response's row (alongside: the first token doesn't wait for
    it), and the task that records its end (whoever is listening)."""
    started.channel = state.executor.start(started.plan)
    if started.stored:
        started.written = asyncio.ensure_future(_write(state, started.row, started.plan.recorded))
    started.finished = asyncio.create_task(
        finalize(state, started), name=f"response-{started.plan.run_id}"
    )


def usage_of(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "input_tokens": outcome.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": outcome.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": outcome.input_tokens + outcome.output_tokens,
    }


def ended(started: Started, outcome: RunOutcome) -> dict[str, Any]:
    """The response's record once its run has ended."""
    row = dict(started.row)
    incomplete = outcome.status == "completed" and outcome.finish_reason in ("length", "max_tokens")
    assert started.channel is not None
    row["output"] = outcome_items(
        started.plan.run_id,
        started.row["params"]["server_labels"],
        started.channel.events,
        outcome,
        incomplete=incomplete,
        include_results=started.include_results,
    )
    row["usage"] = usage_of(outcome)
    row["completed_at"] = datetime.now(UTC)
    if outcome.served is not None:  # which of the agent's models answered (or failed last)
        served = outcome.served
        row["params"] = {
            **row["params"],
            "served_by": {
                "model": served.model,
                "provider": served.provider,
                "fallback_index": served.fallback_index,
            },
        }
    if outcome.status == "failed":
        problem = outcome.error or {}
        row["status"] = "failed"
        row["error"] = {
            "code": "server_error",
            "message": str(problem.get("detail") or problem.get("title") or "The run failed."),
        }
    elif outcome.status == "cancelled":
        row["status"] = "cancelled"
    elif incomplete:
        row["status"] = "incomplete"
        row["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        row["status"] = "completed"
    return row


async def finalize(state: ChatState, started: Started) -> dict[str, Any]:
    """Wait for the run and record the response's end (only its status when not stored)."""
    assert started.channel is not None and started.channel.task is not None
    if started.written is not None:  # the end's upsert writes the row anyway
        with contextlib.suppress(Exception):
            await asyncio.shield(started.written)
    if started.stored and started.row["status"] == "queued":
        await _mark_in_progress(state, started)
    outcome: RunOutcome = await asyncio.shield(started.channel.task)
    row = ended(started, outcome)
    if started.stored:
        try:
            async with state.sessionmaker() as session, session.begin():
                await repository.upsert_end(session, row)
        except Exception:  # the run and its usage are recorded; the body is not
            logger.exception("response not recorded", extra={"run_id": str(row["id"])})
    if row["conversation_id"] is not None and row["status"] in ("completed", "incomplete"):
        try:  # the turn joins the conversation: its input, then its output
            async with state.sessionmaker() as session, session.begin():
                conversation = await session.get(Conversation, row["conversation_id"])
                if conversation is not None:
                    await conversations.add(
                        session, started.access, conversation, row["input_items"] + row["output"]
                    )
        except Exception:
            logger.exception("conversation not updated", extra={"run_id": str(row["id"])})
    return row


async def _mark_in_progress(state: ChatState, started: Started) -> None:
    """A background response is in progress once its run has started."""
    assert started.channel is not None
    events = state.hub.follow_local(started.channel, 0)
    async with contextlib.aclosing(events):
        async for _ in events:
            break
    with contextlib.suppress(Exception):  # its end is what matters; that is written after
        async with state.sessionmaker() as session, session.begin():
            await repository.mark_in_progress(session, started.plan.run_id)


FINAL = ("completed", "failed", "cancelled", "incomplete")


async def wait_final(state: ChatState, access: Access, id: str, *, timeout: float = 30.0) -> dict:
    """The response once it has ended (or as it stands after ``timeout``), as an object."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with state.sessionmaker() as session:
            row, run_status = await load(session, access, id)
        found = as_object(row, run_status)
        if found["status"] in FINAL or loop.time() > deadline:
            return found
        await asyncio.sleep(0.05)


def as_object(row: dict[str, Any], run_status: str | None = None) -> dict[str, Any]:
    """A stored (or just made) response in OpenAI's ``Response`` shape."""
    status, error = row["status"], row["error"]
    if status == "in_progress" and run_status == "failed":  # its replica stopped
        status, error = (
            "failed",
            {"code": "server_error", "message": "The replica running this response stopped."},
        )
    echo = row["params"]
    created, completed = row["created_at"], row["completed_at"]
    conversation = row["conversation_id"]
    return {
        "id": response_id(row["id"]),
        "object": "response",
        "created_at": int(created.timestamp()),
        "status": status,
        "error": error,
        "incomplete_details": row["incomplete_details"],
        "instructions": echo["instructions"],
        "metadata": echo["metadata"],
        "model": row["model"],
        "output": row["output"],
        "parallel_tool_calls": echo["parallel_tool_calls"],
        "temperature": echo["temperature"],
        "tool_choice": echo["tool_choice"],
        "tools": echo["tools"],
        "top_p": echo["top_p"],
        "background": echo["background"],
        "completed_at": int(completed.timestamp()) if completed else None,
        "conversation": {"id": f"conv_{conversation.hex}"} if conversation else None,
        "max_output_tokens": echo["max_output_tokens"],
        "max_tool_calls": None,
        "previous_response_id": response_id(row["previous_response_id"])
        if row["previous_response_id"]
        else None,
        "prompt": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": echo["safety_identifier"],
        "service_tier": "default",
        "store": echo["store"],
        "text": echo["text"],
        "top_logprobs": 0,
        "truncation": echo["truncation"],
        "usage": row["usage"],
        "user": echo["user"],
        # AgentMesh's own: the agent's model that answered (``model`` names the agent).
        "served_by": echo.get("served_by"),
    }


async def load(session: AsyncSession, access: Access, id: str) -> tuple[dict[str, Any], str]:
    """A stored response of the caller's workspace (and its run's status), else a 404."""
    run_id = run_id_of(id)
    row = None if run_id is None else await repository.get(session, run_id, access.workspace_id)
    if row is None:
        raise ResponseNotFound(f"Response with id '{id}' not found.", extra={"param": "id"})
    data = dict(row)
    return data, data.pop("run_status")

"""A person approves a tool call before it runs.

Each tool ref of an agent has a ``policy``: ``always_allow`` (the default of built-in
tools), ``always_ask`` (the default of MCP tools) or ``never`` (listed, but every call is
refused). An MCP ref's policy is one for all its tools or one per tool name.

A run that reaches a call to ask about pauses there, durably: its state (the prompt so
far, the calls still to make, the answer so far) goes to ``chat.run_pauses`` and the run's
status becomes ``requires_action``, with its budget reservation kept. Any replica can
then take the decision (``approvals_router``): the pause is claimed in one statement and
the run goes on as a task of that replica, its events numbered after the pause's. One
left waiting past ``approval_timeout_seconds`` is ended ``expired`` by the run watch of
any replica, which releases its reservation.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ToolMessage,
    messages_from_dict,
    messages_to_dict,
)

from agentmesh.chat.models import WHOLE_WORKSPACE
from agentmesh.chat.runs.hub import TERMINAL, RunChannel, RunEvent, RunHub
from agentmesh.chat.runs.repository import CANCEL, EXPIRE, PAUSE
from agentmesh.shared.errors import problem_type
from agentmesh.shared.events.streams import RUNS_STREAM, RUNS_SUBJECT_PREFIX

if TYPE_CHECKING:
    from agentmesh.chat.runs.executor import RunOutcome, RunPlan
    from agentmesh.chat.state import ChatState

logger = logging.getLogger("agentmesh.chat.runs")
ALLOW, ASK, NEVER = "always_allow", "always_ask", "never"
#: Most expired pauses one sweep ends (the next sweep takes the rest).
EXPIRE_LIMIT = 100


def tool_policies(config: dict[str, Any]) -> dict[str, str]:
    """The policy of each tool the agent lists, by tool name."""
    policies: dict[str, str] = {}
    for ref in config.get("tools") or []:
        policy = ref.get("policy")
        if ref.get("id") == "mcp":
            for name in (ref.get("config") or {}).get("tools") or []:
                chosen = policy.get(name) if isinstance(policy, dict) else policy
                policies.setdefault(str(name), chosen or ASK)
        else:
            policies[str(ref.get("id"))] = policy if isinstance(policy, str) else ALLOW
    return policies


def asking_tools(config: dict[str, Any]) -> list[str]:
    """The agent's tools whose calls need a person's approval."""
    return sorted(name for name, policy in tool_policies(config).items() if policy == ASK)


@dataclass
class Resume:
    """A paused run going on: its state from ``chat.run_pauses`` and the decision."""

    state: dict[str, Any]
    decision: dict[str, Any]
    last_event_id: int
    #: The same run going on (False: a new run that starts with a decided call, as a
    #: Responses API request answering an ``mcp_approval_request`` does).
    continued: bool = True

    @property
    def messages(self) -> list[BaseMessage] | None:
        """The prompt as it stood (None: the run's own prompt, from its history)."""
        saved = self.state.get("messages")
        return None if saved is None else list(messages_from_dict(saved))

    @property
    def calls(self) -> list[dict[str, Any]]:
        return list(self.state["calls"])

    def calling(self) -> list[BaseMessage]:
        """The model's message making the decided calls: after a prompt built from the
        history (which leaves out a call without its result), before their results."""
        calls = [{**call, "type": "tool_call"} for call in self.calls]
        return [AIMessage("", tool_calls=calls)]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def restore(self, outcome: RunOutcome) -> None:
        """The answer as far as it went before the pause."""
        saved = self.state["outcome"]
        outcome.content = saved["content"]
        outcome.tool_calls = list(saved["tool_calls"])
        outcome.input_tokens = int(saved["input_tokens"])
        outcome.output_tokens = int(saved["output_tokens"])
        outcome.ttft_ms = saved.get("ttft_ms")
        outcome.citations = list(saved.get("citations") or [])


def denied_result(name: str, reason: str | None) -> str:
    why = f": {reason.rstrip('.')}." if reason else "."
    return f"Denied: a person did not approve this call to {name!r}{why} Go on without it."


async def call_tools(
    hub: RunHub,
    channel: RunChannel,
    plan: RunPlan,
    calls: list[dict[str, Any]],
    by_name: dict[str, Any],
    messages: list[BaseMessage],
    outcome: RunOutcome,
    *,
    step: int,
    decision: dict[str, Any] | None = None,
) -> bool:
    """Make the model's tool calls in order, as their policies say; ``decision`` is a
    person's on the first. True when the run pauses for approval (``outcome.pause``)."""
    policies = tool_policies(plan.config)
    for index, call in enumerate(calls):
        name = call["name"]
        policy = policies.get(name, ALLOW)  # (knowledge_search, bound to the agent's KBs)
        record: dict[str, Any] = {"id": call["id"], "name": name, "args": call["args"]}
        if index == 0 and decision is not None:
            record["approval"] = decision
        elif policy == ASK and name in by_name:
            outcome.status = "requires_action"
            outcome.pause = {
                "messages": messages_to_dict(messages),
                "calls": [dict(c) for c in calls[index:]],
                "step": step,
            }
            await hub.emit(
                channel,
                "tool.approval_required",
                {"run_id": plan.run_id, "call_id": call["id"], "name": name, "args": call["args"]},
            )
            return True
        await hub.emit(channel, "tool.call", record)
        tool = by_name.get(name)
        if tool is None:
            result = f"Error: no tool named {name!r}."
        elif "approval" in record and not record["approval"]["approve"]:
            result = denied_result(name, record["approval"].get("reason"))
        elif policy == NEVER and "approval" not in record:
            result = f"Error: the tool {name!r} may not be used by this agent."
        else:
            result = str(await tool.ainvoke(call["args"]))
        record["result"] = result
        outcome.tool_calls.append(record)
        await hub.emit(channel, "tool.result", {"id": call["id"], "name": name, "result": result})
        messages.append(ToolMessage(content=result, tool_call_id=call["id"]))
    return False


# ------------------------------------------------------------------ the pause, stored


def pause_state(plan: RunPlan, outcome: RunOutcome) -> dict[str, Any]:
    """What a replica needs to go on with the run: the pause and the plan's own parts."""
    assert outcome.pause is not None
    return {
        **outcome.pause,
        "config": plan.config,
        "parent_id": None if plan.parent_id is None else str(plan.parent_id),
        "temperature": plan.temperature,
        "max_tokens": plan.max_tokens,
        "title_seed": plan.title_seed,
        "outcome": {
            "content": outcome.content,
            "tool_calls": outcome.tool_calls,
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "ttft_ms": outcome.ttft_ms,
            "citations": outcome.citations,
        },
    }


async def pause_run(
    state: ChatState,
    plan: RunPlan,
    outcome: RunOutcome,
    *,
    model: str,
    provider: str,
    last_event_id: int,
) -> bool:
    """Store the pause; False when the run was no longer running (swept meanwhile)."""
    params = {
        "run_id": plan.run_id,
        "model": model,
        "provider": provider,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "last_event_id": last_event_id,
        "state": json.dumps(pause_state(plan, outcome), default=str),
        "timeout": state.settings.approval_timeout_seconds,
    }
    async with state.sessionmaker() as session, session.begin():
        return (await session.execute(PAUSE, params)).first() is not None


# ------------------------------------------------------------------ expiry, cancel


def expired_problem(timeout: float) -> dict[str, Any]:
    return {
        "type": problem_type("approval-expired"),
        "title": "Approval expired",
        "status": 410,
        "detail": f"No one decided on the tool call within {timeout:g} "
        "seconds; the run ended without it.",
    }


async def expire_pauses(state: ChatState) -> list[uuid.UUID]:
    """End the runs left waiting past the approval timeout; returns their ids."""
    error = expired_problem(state.settings.approval_timeout_seconds)
    async with state.sessionmaker() as session, session.begin():
        rows = (
            await session.execute(
                EXPIRE,
                {
                    "limit": EXPIRE_LIMIT,
                    "error": json.dumps(error),
                    "whole": WHOLE_WORKSPACE,
                    "status": "expired",
                },
            )
        ).all()
    for row in rows:
        logger.info("run expired waiting for approval", extra={"run_id": str(row.id)})
        await _end_stream(state, row.id, row.last_event_id - 2, "run.expired", error, "expired")
    return [row.id for row in rows]


async def cancel_pause(state: ChatState, run_id: uuid.UUID) -> bool:
    """Cancel a run waiting for approval (False: it was no longer waiting)."""
    async with state.sessionmaker() as session, session.begin():
        row = (
            await session.execute(
                CANCEL,
                {
                    "run_id": run_id,
                    "error": None,
                    "whole": WHOLE_WORKSPACE,
                    "status": "cancelled",
                },
            )
        ).first()
    if row is None:
        return False
    usage = {
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "total_tokens": row.input_tokens + row.output_tokens,
    }
    data = {"message_id": None, "content": "", "usage": usage}
    await _end_stream(state, run_id, row.last_event_id - 2, "run.cancelled", data, "cancelled")
    return True


async def _end_stream(
    state: ChatState, run_id: uuid.UUID, last: int, type: str, data: dict[str, Any], status: str
) -> None:
    """The end (``type``, then ``done``) after the pause's ``done``, for its followers."""
    try:
        broker = state.runtime.broker
        assert broker is not None  # chat always runs on NATS
        js = broker.config.connection_state.stream
        for event in (
            RunEvent(last + 1, type, data),
            RunEvent(last + 2, TERMINAL, {"status": status}),
        ):
            body = json.dumps({"id": event.id, "type": event.type, "data": event.data})
            headers = {"Nats-Msg-Id": f"{run_id}:{event.id}"}
            await js.publish(
                f"{RUNS_SUBJECT_PREFIX}{run_id}",
                body.encode(),
                stream=RUNS_STREAM,
                timeout=5,
                headers=headers,
            )
    except Exception:  # followers rebuild the end from the run's row (last_event_id)
        logger.warning("end of a paused run not published", extra={"run_id": str(run_id)})

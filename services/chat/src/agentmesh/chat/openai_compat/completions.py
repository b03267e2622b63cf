"""A finished run as a ``chat.completion``, or a running one as ``chat.completion.chunk``s.

Content streams as the model produces it. Tool calls for the caller to run are known
when the model's turn ends, so they come whole, in one chunk, just before the last one.
The agent's own tools (when the caller sends no ``tools``) run on the server and only
their answer is streamed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agentmesh.chat.openai_compat.errors import openai_error
from agentmesh.chat.openai_compat.schemas import (
    AssistantMessage,
    ChatCompletion,
    Choice,
    ServedBy,
    Usage,
)
from agentmesh.chat.runs.executor import RunOutcome, RunPlan
from agentmesh.chat.runs.hub import RunChannel, RunHub
from agentmesh.shared.errors import AppError


def completion_id(run_id: uuid.UUID) -> str:
    return f"chatcmpl-{run_id.hex}"


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LangChain tool calls (``{id, name, args}``) in OpenAI's format."""
    return [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("args") or {})},
        }
        for call in calls
    ]


FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")


def finish_reason(outcome: RunOutcome, plan: RunPlan) -> str:
    """``tool_calls`` when calls are pending, else the model's own reason (``stop``,
    ``length``, ``content_filter``). A model that gives none (or one of another vocabulary,
    such as Anthropic's) gets ``length`` when the answer used all its tokens, else ``stop``."""
    if outcome.pending_tool_calls:
        return "tool_calls"
    reason = {
        "max_tokens": "length",
        "end_turn": "stop",
        "stop_sequence": "stop",
        "tool_use": "tool_calls",
    }.get(outcome.finish_reason or "", outcome.finish_reason)
    if reason in FINISH_REASONS and reason != "tool_calls":
        return reason
    if plan.max_tokens and outcome.output_tokens >= plan.max_tokens:
        return "length"
    return "stop"


def usage(outcome: RunOutcome) -> Usage:
    return Usage(
        prompt_tokens=outcome.input_tokens,
        completion_tokens=outcome.output_tokens,
        total_tokens=outcome.input_tokens + outcome.output_tokens,
    )


def served_by(outcome: RunOutcome) -> ServedBy | None:
    """The agent's model that answered (its own or a fallback)."""
    served = outcome.served
    if served is None:
        return None
    return ServedBy(
        model=served.model, provider=served.provider, fallback_index=served.fallback_index
    )


class RunFailed(AppError):
    """A run that failed, with the status and type its ``run.failed`` problem carries."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(
            problem.get("detail"),
            status=int(problem.get("status") or 502),
            type=str(problem.get("type") or "run-failed").rsplit("/", 1)[-1],
            title=problem.get("title") or "Run failed",
        )


def completion(plan: RunPlan, outcome: RunOutcome, model: str, created: int) -> ChatCompletion:
    """The ``chat.completion`` of a finished run (a cancelled one keeps what it said)."""
    if outcome.status == "failed":
        raise RunFailed(outcome.error or {})
    calls = openai_tool_calls(outcome.pending_tool_calls)
    message = AssistantMessage(
        content=outcome.content or (None if calls else ""), tool_calls=calls or None
    )
    return ChatCompletion(
        id=completion_id(plan.run_id),
        created=created,
        model=model,
        usage=usage(outcome),
        choices=[Choice(message=message, finish_reason=finish_reason(outcome, plan))],
        served_by=served_by(outcome),
    )


@dataclass(frozen=True)
class Frame:
    """One ``data:`` line of the stream (shaped for ``runs.sse.event_stream``)."""

    data: str

    def sse(self) -> bytes:
        return f"data: {self.data}\n\n".encode()


DONE = Frame("[DONE]")


async def completion_chunks(
    hub: RunHub,
    channel: RunChannel,
    plan: RunPlan,
    model: str,
    created: int,
    *,
    include_usage: bool,
) -> AsyncIterator[Frame]:
    """The run as OpenAI chunks: the role, content deltas, tool calls, the finish reason,
    the usage (with ``include_usage``), then ``[DONE]``. A failure is an ``error`` frame."""
    head = {
        "id": completion_id(plan.run_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> Frame:
        choices = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        body = {**head, "choices": choices, **extra}
        if include_usage:
            body.setdefault("usage", None)
        return Frame(json.dumps(body, separators=(",", ":")))

    yield chunk({"role": "assistant", "content": ""})
    async for event in hub.follow_local(channel, 0):
        if event.type == "message.delta" and event.data.get("delta"):
            yield chunk({"content": event.data["delta"]})
    assert channel.task is not None
    outcome: RunOutcome = await asyncio.shield(channel.task)  # ends right after "done"
    if outcome.status == "failed":
        problem = outcome.error or {}
        status = int(problem.get("status") or 502)
        slug = str(problem.get("type") or "run-failed").rsplit("/", 1)[-1]
        message = problem.get("detail") or problem.get("title") or "The run failed."
        yield Frame(json.dumps(openai_error(status, message, slug=slug)))
        yield DONE
        return
    calls = openai_tool_calls(outcome.pending_tool_calls)
    if calls:
        yield chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
    served = served_by(outcome)
    yield chunk(
        {}, finish_reason(outcome, plan), served_by=None if served is None else served.model_dump()
    )
    if include_usage:
        yield chunk(None, usage=usage(outcome).model_dump())
    yield DONE


def now() -> int:
    return int(time.time())

"""The memory window: which turns of a conversation go into the prompt.

The prompt is a system message (the agent's instructions plus a summary of older turns),
the agent's few-shot examples, then as many recent turns as fit. Its size, counted by
``count_message_tokens``, never exceeds the window:

- The latest user message is always kept. Its text is truncated if it alone would not fit.
- Older turns are dropped oldest first, and never with a gap: once a turn does not fit,
  every turn before it is dropped too.
- An assistant message that calls tools stays together with its tool results. Tool results
  whose call is not in the history are left out, because providers reject them.
- Examples (user and assistant pairs) come before older turns: they are kept in order, a
  pair whole, as long as they fit beside the instructions and the latest message; what
  is left is for older turns. An example that does not fit is left out with every one
  after it (they are never summarized).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from agentmesh.chat.llm.tokens import (
    REPLY_PRIMING_TOKENS,
    count_one_message,
    count_tokens,
    message_text,
)

M = TypeVar("M", bound=BaseMessage)

MIN_WINDOW_TOKENS = 32
SUMMARY_HEADING = "Summary of the earlier conversation:"
TRUNCATION_MARK = "…"


@dataclass(frozen=True)
class PromptPlan:
    """The prompt to send, and the older history messages that did not fit."""

    messages: list[BaseMessage]
    dropped: list[BaseMessage]


def build_prompt(
    instructions: str,
    history: Sequence[BaseMessage],
    *,
    window_tokens: int,
    summary: str | None = None,
) -> list[BaseMessage]:
    """System message, then the most recent turns that fit in ``window_tokens``."""
    return plan_prompt(instructions, history, window_tokens=window_tokens, summary=summary).messages


def turns_to_summarize(
    instructions: str,
    history: Sequence[BaseMessage],
    *,
    window_tokens: int,
    summary: str | None = None,
) -> list[BaseMessage]:
    """The older messages ``build_prompt`` leaves out, oldest first, for the caller to summarize."""
    return plan_prompt(instructions, history, window_tokens=window_tokens, summary=summary).dropped


def plan_prompt(
    instructions: str,
    history: Sequence[BaseMessage],
    *,
    window_tokens: int,
    summary: str | None = None,
    examples: Sequence[tuple[str, str]] = (),
) -> PromptPlan:
    """Both answers at once: the prompt and the dropped messages."""
    if window_tokens < MIN_WINDOW_TOKENS:
        raise ValueError(f"window_tokens must be at least {MIN_WINDOW_TOKENS}")
    system_text = instructions.strip()
    if summary:
        system_text = f"{system_text}\n\n{SUMMARY_HEADING}\n{summary.strip()}".strip()
    system = SystemMessage(system_text) if system_text else None

    units = _turn_units(history)
    latest_index = next(
        (i for i in range(len(units) - 1, -1, -1) if isinstance(units[i][0], HumanMessage)),
        None,
    )
    latest = units[latest_index][0] if latest_index is not None else None

    available = window_tokens - REPLY_PRIMING_TOKENS
    system_cost = count_one_message(system) if system else 0
    latest_cost = count_one_message(latest) if latest else 0
    if system_cost + latest_cost > available:
        if latest is not None:
            user_budget = max(available - system_cost, available // 2)
            if latest_cost > user_budget:
                latest = _truncate(latest, user_budget)
                latest_cost = count_one_message(latest)
        if system is not None and system_cost > available - latest_cost:
            system = _truncate(system, available - latest_cost)
            system_cost = count_one_message(system)

    budget = available - system_cost - latest_cost
    shots: list[BaseMessage] = []
    for question, answer in examples:
        pair = [HumanMessage(question), AIMessage(answer)]
        cost = sum(count_one_message(m) for m in pair)
        if cost > budget:
            break
        budget -= cost
        shots.extend(pair)
    kept: set[int] = set()
    for index in range(len(units) - 1, -1, -1):
        if index == latest_index:
            continue
        cost = sum(count_one_message(m) for m in units[index])
        if cost > budget:
            break
        budget -= cost
        kept.add(index)

    messages: list[BaseMessage] = [system, *shots] if system else shots
    dropped: list[BaseMessage] = []
    for index, unit in enumerate(units):
        if index == latest_index:
            messages.append(latest)  # type: ignore[arg-type]
        elif index in kept:
            messages.extend(unit)
        else:
            dropped.extend(unit)
    return PromptPlan(messages=messages, dropped=dropped)


def _turn_units(history: Sequence[BaseMessage]) -> list[list[BaseMessage]]:
    """Split history into units kept or dropped whole: a tool call with its results."""
    units: list[list[BaseMessage]] = []
    unanswered: set[str] = set()

    def close_unit() -> None:
        # Providers reject a tool call without a result for each of its ids. A call left
        # unanswered (a run that failed mid-tool) keeps only its text, if it has any.
        if unanswered:
            call = units.pop()[0]
            if message_text(call).strip():
                units.append([AIMessage(content=call.content, id=call.id)])

    for message in history:
        if isinstance(message, ToolMessage):
            if message.tool_call_id in unanswered:
                units[-1].append(message)
                unanswered.discard(message.tool_call_id)
            continue  # a result without its call would be rejected too
        close_unit()
        unanswered = set()
        if isinstance(message, AIMessage) and message.tool_calls:
            unanswered = {call["id"] or "" for call in message.tool_calls}
        units.append([message])
    close_unit()
    return units


def _truncate(message: M, budget: int) -> M:
    """A copy of ``message`` whose counted size is at most ``budget`` (text cut at the end)."""
    text = message_text(message)
    overhead = count_one_message(message.model_copy(update={"content": ""}))
    text_budget = budget - overhead
    low, high = 0, len(text)
    while low < high:  # the largest prefix that fits; ``low`` always fits
        middle = (low + high + 1) // 2
        if count_tokens(text[:middle].rstrip() + TRUNCATION_MARK) <= text_budget:
            low = middle
        else:
            high = middle - 1
    cut = text[:low].rstrip() + TRUNCATION_MARK if low else ""
    if count_tokens(cut) > text_budget:
        cut = ""
    return message.model_copy(update={"content": cut})

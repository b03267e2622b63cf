"""The prompt of a run: instructions (their template filled in), a summary of older turns
(when the agent has summarization on), the agent's examples, and the most recent turns
that fit the agent's token window.

When turns fall out of the window, they are summarized with the agent's own model, and the
summary is kept on the conversation with the id of the last turn it covers, so later turns
only summarize what fell out since.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from sqlalchemy import update

from agentmesh.chat.llm.memory import plan_prompt
from agentmesh.chat.llm.tokens import message_text
from agentmesh.chat.models import Conversation
from agentmesh.chat.runs.templating import examples_of, instructions_for

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from agentmesh.chat.runs.executor import RunPlan
    from agentmesh.chat.state import ChatState

logger = logging.getLogger("agentmesh.chat.memory")
SUMMARIZE = (
    "Summarize the earlier part of this conversation in at most five sentences. Keep facts, "
    "names, numbers and decisions; leave out pleasantries."
)


def _transcript(messages: list[BaseMessage]) -> str:
    lines = []
    for message in messages:
        role = {"human": "User", "ai": "Assistant", "tool": "Tool"}.get(message.type, "System")
        text = message_text(message).strip()
        if text:
            lines.append(f"{role}: {text}")
    return "\n".join(lines)


async def prompt_for(
    state: ChatState, plan: RunPlan, model: BaseChatModel | None
) -> list[BaseMessage]:
    """The run's prompt; ``model`` summarizes what falls out of the window (``None``: no
    summary, for a stateless run)."""
    memory = plan.config.get("memory") or {}
    window = int(memory.get("window_tokens", 4000))
    instructions = await instructions_for(state, plan)
    examples = examples_of(plan.config)
    planned = plan_prompt(
        instructions, plan.history, window_tokens=window, summary=plan.summary, examples=examples
    )
    if model is None or not (memory.get("summarize") and planned.dropped and plan.conversation_id):
        return planned.messages
    covered = planned.dropped[-1].id
    try:
        previous = f"Summary so far: {plan.summary}\n\n" if plan.summary else ""
        reply = await model.ainvoke(
            [
                SystemMessage(SUMMARIZE),
                HumanMessage(previous + _transcript(planned.dropped)),
            ]
        )
        summary = str(reply.content).strip()[:4000]
    except Exception:  # no summary is better than no answer
        logger.warning("summary not made", extra={"run_id": str(plan.run_id)})
        return planned.messages
    if covered:
        async with state.sessionmaker() as session, session.begin():
            await session.execute(
                update(Conversation)
                .where(Conversation.id == plan.conversation_id)
                .values(summary=summary, summary_upto=uuid.UUID(str(covered)))
            )
    kept = plan.history[len(planned.dropped) :]
    return plan_prompt(
        instructions, kept, window_tokens=window, summary=summary, examples=examples
    ).messages

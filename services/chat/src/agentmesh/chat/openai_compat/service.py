"""Agents as OpenAI models, and stateless runs of them.

A caller's agents are listed twice: by id and by a slug of their name. Agents whose
names give the same slug are told apart by the last 8 hex digits of their id
(``keeper-3f9a0c12``): agent ids are UUIDv7, whose first digits are a timestamp shared by
agents created within the same minute.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentmesh.chat.models import AgentSnapshot, new_id
from agentmesh.chat.openai_compat.repository import caller_agents
from agentmesh.chat.openai_compat.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    NamedToolChoice,
    OtherToolChoice,
)
from agentmesh.chat.runs.approvals import asking_tools
from agentmesh.chat.runs.executor import RunPlan
from agentmesh.chat.runs.repository import begin_run
from agentmesh.chat.runs.templating import CALLER_INSTRUCTIONS
from agentmesh.chat.state import ChatState
from agentmesh.shared.access import Access
from agentmesh.shared.errors import AppError, NotFound


class ModelNotFound(NotFound):
    type, title = "model-not-found", "Model not found"


class InvalidRequest(AppError):
    status, type, title = 400, "invalid-request", "Bad Request"


def slugify(name: str) -> str:
    """``"Keeper of Keys!"`` -> ``"keeper-of-keys"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "agent"


def model_slugs(snapshots: list[AgentSnapshot]) -> dict[uuid.UUID, str]:
    """Each agent's slug, suffixed with the end of its id when its name's slug is shared."""
    base = {s.agent_id: slugify(str(s.config.get("name") or "")) for s in snapshots}
    counts = Counter(base.values())
    return {
        agent_id: slug if counts[slug] == 1 else f"{slug}-{agent_id.hex[-8:]}"
        for agent_id, slug in base.items()
    }


async def resolve_model(
    db: AsyncSession | AsyncConnection, caller: Access, model: str
) -> tuple[AgentSnapshot, bool]:
    """The caller's agent named by ``model`` (id or slug), and whether a budget applies.
    An id reads that agent alone; a slug needs them all (it depends on the other names)."""
    try:
        wanted: uuid.UUID | None = uuid.UUID(model)
    except ValueError:
        wanted = None
    agents = await caller_agents(db, caller, wanted)
    if wanted is None:
        slugs = model_slugs([snapshot for snapshot, _ in agents])
        wanted = next((agent_id for agent_id, slug in slugs.items() if slug == model), None)
    for snapshot, has_budget in agents:
        if snapshot.agent_id == wanted:
            return snapshot, has_budget
    raise ModelNotFound(
        f"The model {model!r} does not exist or you do not have access to it.",
        extra={"param": "model"},
    )


def _arguments(raw: str, param: str) -> dict[str, Any]:
    try:
        args = json.loads(raw or "{}")
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object.", extra={"param": param})
    return args


def to_langchain(messages: list[ChatMessage]) -> tuple[str, list[BaseMessage]]:
    """The caller's system text (system and developer messages, joined) and the rest of
    the messages as LangChain messages."""
    system: list[str] = []
    history: list[BaseMessage] = []
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            system.append(message.text)
        elif message.role == "user":
            history.append(HumanMessage(message.text))
        elif message.role == "assistant":
            calls = [
                {
                    "id": call.id,
                    "name": call.function.name,
                    "args": _arguments(call.function.arguments, f"messages[{index}].tool_calls"),
                }
                for call in message.tool_calls or []
            ]
            history.append(AIMessage(message.text, tool_calls=calls))
        else:
            if not message.tool_call_id:
                raise InvalidRequest(
                    "A tool message needs the tool_call_id it answers.",
                    extra={"param": f"messages[{index}].tool_call_id"},
                )
            history.append(
                ToolMessage(message.text, tool_call_id=message.tool_call_id, name=message.name)
            )
    return "\n\n".join(part for part in system if part.strip()), history


def effective_max_tokens(body: ChatCompletionRequest, config: dict[str, Any]) -> int | None:
    """The caller's max_tokens, capped at the agent's max_output_tokens when it sets one."""
    requested, limit = body.requested_max_tokens, config.get("max_output_tokens")
    if requested is None:
        return limit
    return min(requested, limit) if limit else requested


async def start_completion(
    state: ChatState, session: AsyncSession, caller: Access, body: ChatCompletionRequest
) -> RunPlan:
    """Check the request, reserve the budget, record the run and commit: the plan to run."""
    async with state.reader.connect() as reads:  # one statement: no BEGIN, no COMMIT
        snapshot, has_budget = await resolve_model(reads, caller, body.model)
    caller_system, history = to_langchain(body.messages)
    config = dict(snapshot.config)
    asking = [] if body.tools else asking_tools(config)
    if asking:  # this API has no way to ask a person
        raise InvalidRequest(
            f"The agent's tools {', '.join(asking)} need a person's approval, which "
            "/v1/chat/completions cannot ask for: use the Responses API or a conversation, "
            "or set their policy to always_allow.",
            type="tool-approval-unsupported",
            extra={"param": "model"},
        )
    if caller_system:  # the caller's system messages come after the agent's instructions
        config[CALLER_INSTRUCTIONS] = caller_system
    max_tokens = effective_max_tokens(body, config)
    run_id = new_id()
    reserve = (max_tokens or state.settings.default_reserve_tokens) if has_budget else None
    recorded = await begin_run(
        state,
        session,
        reserve=reserve,
        run_id=run_id,
        workspace_id=caller.workspace_id,
        user_id=caller.user_id,
        agent_id=snapshot.agent_id,
        agent_version=snapshot.version,
        model=config.get("model") or "offline",
    )
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    return RunPlan(
        run_id=run_id,
        workspace_id=caller.workspace_id,
        user_id=caller.user_id,
        agent_id=snapshot.agent_id,
        agent_version=snapshot.version,
        config=config,
        history=history,
        reserved_tokens=reserve or 0,
        temperature=body.temperature,
        max_tokens=max_tokens,
        client_tools=tools or None,
        recorded=recorded,
        tool_choice=_tool_choice(body) if tools else None,
        response_format=body.response_format_dict,
    )


def _tool_choice(body: ChatCompletionRequest) -> str | dict[str, Any] | None:
    choice = body.tool_choice
    if isinstance(choice, OtherToolChoice):
        return None  # left to the model
    return choice.model_dump() if isinstance(choice, NamedToolChoice) else choice

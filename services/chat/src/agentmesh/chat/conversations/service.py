"""Conversations: ownership, listing, the branch a reply continues, starting a turn."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentmesh.chat.conversations import repository
from agentmesh.chat.models import Conversation
from agentmesh.shared.access import Access
from agentmesh.shared.errors import AppError, NotFound


class ConversationNotFound(NotFound):
    type, title = "conversation-not-found", "Conversation not found"


class AgentUnavailable(AppError):
    status, type, title = 409, "agent-unavailable", "Conflict"


def owns(caller: Access, conversation: Conversation) -> bool:
    """Whether the caller may open ``conversation`` by id: theirs, in the workspace their
    token is bound to; a platform admin may open any."""
    return caller.is_platform_admin or (
        conversation.workspace_id == caller.workspace_id and conversation.user_id == caller.user_id
    )


async def get_owned(session: AsyncSession, caller: Access, id: uuid.UUID) -> Conversation:
    conversation = await session.get(Conversation, id)
    if conversation is None or not owns(caller, conversation):
        raise ConversationNotFound("No such conversation.")
    return conversation


async def history(
    connection: AsyncConnection,
    caller: Access,
    id: uuid.UUID,
    cursor: str | None,
    limit: int,
) -> tuple[list[Row[Any]], str | None]:
    """One page of the messages of a conversation the caller may open (``owns``), oldest
    first, with the next page's cursor; ``ConversationNotFound`` when they may not."""
    page = await repository.messages(connection, caller, id, cursor, limit)
    if page is None:
        raise ConversationNotFound("No such conversation.")
    return page


async def get_for_turn(connection: AsyncConnection, caller: Access, id: uuid.UUID) -> Row[Any]:
    """The conversation a turn continues, its agent's current snapshot, and whether a
    budget applies to its owner's runs, as one row (``repository.turn``): one round trip."""
    turn = await repository.turn(connection, caller, id)
    if turn is None:
        raise ConversationNotFound("No such conversation.")
    if turn.agent_id is None or turn.deleted or turn.agent_workspace_id != turn.workspace_id:
        raise AgentUnavailable("The conversation's agent was deleted; it can't start new runs.")
    return turn


async def message(
    connection: AsyncConnection, conversation_id: uuid.UUID, id: uuid.UUID, role: str
) -> Row[Any]:
    """Message ``id`` of the conversation (``id``, ``parent_id``), which must be a ``role``
    message; ``NotFound`` otherwise."""
    found = await repository.message(connection, conversation_id, id, role)
    if found is None:
        raise NotFound(f"No such {role} message in this conversation.")
    return found


async def branch(
    db: AsyncConnection | AsyncSession,
    conversation_id: uuid.UUID,
    leaf: uuid.UUID | None = None,
    limit: int = 400,
) -> list[Row[Any]]:
    """The messages from the first to ``leaf`` (default: the newest message), oldest first."""
    return await repository.branch(db, conversation_id, leaf, limit)


#: Stored turns already converted, by message id. A stored message never changes (an
#: edit or a regenerated answer is a new message), and every turn of a conversation
#: converts its whole history again: this keeps that to the newest turns. The messages
#: are shared between runs, so nothing may modify them (prompts are new lists, and
#: truncation copies). Bounded by entries and by characters held; an entry goes
#: ``CONVERTED_TTL_SECONDS`` after its last use (the run heartbeat sweeps even when idle),
#: so deleted or erased messages leave memory soon on every replica.
_CONVERTED: OrderedDict[uuid.UUID, tuple[float, tuple[BaseMessage, ...], int]] = OrderedDict()
_held = [0]  # characters held by _CONVERTED
CONVERTED_CACHE_SIZE = 20_000
CONVERTED_CACHE_CHARS = 20_000_000
CONVERTED_TTL_SECONDS = 300.0


def sweep_converted(now: float | None = None) -> None:
    """Drop what expired or does not fit, least recently used first."""
    now = time.monotonic() if now is None else now
    while _CONVERTED:
        used, _, chars = next(iter(_CONVERTED.values()))
        if (
            used > now - CONVERTED_TTL_SECONDS
            and len(_CONVERTED) <= CONVERTED_CACHE_SIZE
            and _held[0] <= CONVERTED_CACHE_CHARS
        ):
            break
        _CONVERTED.popitem(last=False)
        _held[0] -= chars


def to_langchain(rows: list[Any]) -> list[BaseMessage]:
    """Stored turns as LangChain messages, tool calls and their results included."""
    now = time.monotonic()
    sweep_converted(now)
    messages: list[BaseMessage] = []
    for row in rows:
        entry = _CONVERTED.pop(row.id, None)
        if entry is None:
            converted = _convert(row)
            chars = len(row.content or "") + len(str(row.tool_calls or ""))
            _held[0] += chars
        else:
            _, converted, chars = entry
        _CONVERTED[row.id] = (now, converted, chars)  # to the most recent end
        messages.extend(converted)
    return messages


def forget_converted() -> None:
    """Drop every converted message (after a deletion or an erasure on this replica)."""
    _CONVERTED.clear()
    _held[0] = 0


def _convert(row: Any) -> tuple[BaseMessage, ...]:
    id = str(row.id)  # the stored turn each message comes from (memory summaries)
    if row.role == "user":
        return (HumanMessage(row.content, id=id),)
    if row.status == "failed" and not row.content:
        return ()
    calls = row.tool_calls or []
    if not calls:
        return (AIMessage(row.content, id=id),)
    return (
        AIMessage(
            "",
            id=id,
            tool_calls=[{"id": c["id"], "name": c["name"], "args": c["args"]} for c in calls],
        ),
        *(ToolMessage(str(c.get("result", "")), tool_call_id=c["id"], id=id) for c in calls),
        AIMessage(row.content, id=id),
    )


def after_summary(rows: list[Any], conversation: Any) -> tuple[list[Any], str | None]:
    """The turns the conversation's summary doesn't cover, and the summary, when the
    summary belongs to this branch; else every turn and no summary."""
    ids = [row.id for row in rows]
    if conversation.summary and conversation.summary_upto in ids:
        return rows[ids.index(conversation.summary_upto) + 1 :], conversation.summary
    return rows, None

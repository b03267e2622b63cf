"""Conversations API conversations: native conversations, their messages seen as items.

A conversation's items are its native messages (the branch shown, as the native API
shows it: user and assistant messages, the assistant's server tool calls before its
text as ``mcp_call`` / ``file_search_call``) and, in the same id (time) order, the items
no message holds (``function_call``, ``function_call_output``, system and developer
messages, reasoning), kept in ``conversation_items``. One made through the
Conversations API has no agent until its first response binds it (``UNBOUND``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.conversations import service as native
from agentmesh.chat.models import Conversation, Message, new_id
from agentmesh.chat.responses.items import PREFIX
from agentmesh.chat.responses.tables import ConversationExtraItem, ConversationMeta
from agentmesh.shared.access import Access
from agentmesh.shared.db import rowcount
from agentmesh.shared.errors import NotFound

#: The agent of a conversation no response has bound yet.
UNBOUND = uuid.UUID(int=0)


class ConversationNotFound(NotFound):
    type, title = "not-found", "Conversation not found"


class ItemNotFound(NotFound):
    type, title = "not-found", "Item not found"


def conversation_id(id: uuid.UUID) -> str:
    return f"conv_{id.hex}"


def _uuid(text: str, prefix: str) -> uuid.UUID | None:
    head, _, tail = text.partition("_")
    try:
        return uuid.UUID(hex=tail) if head == prefix else uuid.UUID(text)
    except ValueError:
        return None


async def get(
    session: AsyncSession, access: Access, id: str, *, param: str = "conversation_id"
) -> tuple[Conversation, ConversationMeta | None]:
    """The caller's own conversation in their token's workspace, else a 404."""
    key = _uuid(id, "conv")
    row = (
        None
        if key is None
        else (
            await session.execute(
                select(Conversation, ConversationMeta)
                .join(
                    ConversationMeta,
                    ConversationMeta.conversation_id == Conversation.id,
                    isouter=True,
                )
                .where(
                    Conversation.id == key,
                    Conversation.user_id == access.user_id,
                    Conversation.workspace_id == access.workspace_id,
                )
            )
        ).first()
    )
    if row is not None:
        return row[0], row[1]
    raise ConversationNotFound(f"Conversation with id '{id}' not found.", extra={"param": param})


def as_object(conversation: Conversation, meta: ConversationMeta | None) -> dict[str, Any]:
    return {
        "id": conversation_id(conversation.id),
        "object": "conversation",
        "created_at": int(conversation.created_at.timestamp()),
        "metadata": meta.metadata_ if meta is not None else {},
    }


async def create(
    session: AsyncSession, access: Access, metadata: dict[str, str] | None
) -> tuple[Conversation, ConversationMeta]:
    conversation = Conversation(
        workspace_id=access.workspace_id, user_id=access.user_id, agent_id=UNBOUND, auto_title=False
    )
    session.add(conversation)
    await session.flush()
    meta = ConversationMeta(
        conversation_id=conversation.id,
        workspace_id=access.workspace_id,
        user_id=access.user_id,
        metadata_=metadata or {},
    )
    session.add(meta)
    await session.flush()
    await session.refresh(conversation)
    return conversation, meta


async def bind(session: AsyncSession, conversation: Conversation, agent_id: uuid.UUID) -> bool:
    """Bind an unbound conversation to ``agent_id``; False when it has another agent."""
    if conversation.agent_id == agent_id:
        return True
    if conversation.agent_id != UNBOUND:
        return False
    await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.agent_id == UNBOUND)
        .values(agent_id=agent_id)
    )
    conversation.agent_id = agent_id
    return True


def _message_items(row: Any) -> list[dict[str, Any]]:
    hex = row.id.hex
    if row.role == "user":
        return [
            {
                "type": "message",
                "id": f"msg_{hex}",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": row.content}],
            }
        ]
    items: list[dict[str, Any]] = []
    for index, call in enumerate(row.tool_calls or []):
        if call.get("name") == "knowledge_search":
            items.append(
                {
                    "type": "file_search_call",
                    "id": f"fs_{hex}{index:04x}",
                    "status": "completed",
                    "results": None,
                    "queries": [str((call.get("args") or {}).get("query") or "")],
                }
            )
        else:
            items.append(
                {
                    "type": "mcp_call",
                    "id": f"mcp_{hex}{index:04x}",
                    "server_label": "agentmesh",
                    "name": call["name"],
                    "arguments": json.dumps(call.get("args") or {}),
                    "output": str(call.get("result") or ""),
                    "error": None,
                    "status": "completed",
                }
            )
    status = "completed" if row.status == "completed" else "incomplete"
    items.append(
        {
            "type": "message",
            "id": f"msg_{hex}",
            "role": "assistant",
            "status": status,
            "content": [
                {"type": "output_text", "text": row.content, "annotations": [], "logprobs": []}
            ],
        }
    )
    return items


async def items(session: AsyncSession, conversation: Conversation) -> list[dict[str, Any]]:
    """Every item of the conversation, oldest first."""
    rows = await native.branch(session, conversation.id)
    extras = (
        await session.scalars(
            select(ConversationExtraItem).where(
                ConversationExtraItem.conversation_id == conversation.id
            )
        )
    ).all()
    keyed = [(row.id, item) for row in rows for item in _message_items(row)]
    keyed += [(extra.id, extra.item) for extra in extras]
    keyed.sort(key=lambda pair: pair[0].int)  # uuid7: time order; a message's items in order
    return [item for _, item in keyed]


def _text(item: dict[str, Any]) -> str:
    return "".join(p.get("text") or p.get("refusal") or "" for p in item.get("content") or [])


async def add(
    session: AsyncSession, access: Access, conversation: Conversation, new: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Append ``new`` (normalized items) to the conversation; the items as stored."""
    rows = await native.branch(session, conversation.id, limit=1)
    leaf = rows[-1].id if rows else None
    added: list[dict[str, Any]] = []
    for item in new:
        id = new_id()
        if item["type"] == "message" and item["role"] in ("user", "assistant"):
            session.add(
                Message(
                    id=id,
                    conversation_id=conversation.id,
                    user_id=conversation.user_id,
                    parent_id=leaf,
                    role=item["role"],
                    content=_text(item),
                    tool_calls=[],
                    status="completed",
                )
            )
            leaf = id
            stored = {**item, "id": f"msg_{id.hex}"}
        else:
            stored = {**item, "id": f"{PREFIX.get(item['type'], 'item')}_{id.hex}"}
            session.add(
                ConversationExtraItem(
                    id=id,
                    conversation_id=conversation.id,
                    workspace_id=access.workspace_id,
                    user_id=access.user_id,
                    item=stored,
                )
            )
        added.append(stored)
        await session.flush()  # in order: a message's parent before it
    return added


async def find(session: AsyncSession, conversation: Conversation, item_id: str) -> dict:
    for item in await items(session, conversation):
        if item.get("id") == item_id:
            return item
    raise ItemNotFound(f"Item with id '{item_id}' not found.", extra={"param": "item_id"})


async def remove(session: AsyncSession, conversation: Conversation, item_id: str) -> None:
    """Delete an item; a deleted message's replies hang from its parent instead."""
    await find(session, conversation, item_id)
    head, _, tail = item_id.partition("_")
    key = uuid.UUID(hex=tail) if len(tail) == 32 else None
    if head == "msg" and key is not None:
        message = await session.get(Message, key)
        if message is not None and message.conversation_id == conversation.id:
            await session.execute(
                update(Message).where(Message.parent_id == key).values(parent_id=message.parent_id)
            )
            await session.delete(message)
            native.forget_converted()
            return
    if key is not None:
        deleted = await session.execute(
            delete(ConversationExtraItem).where(
                ConversationExtraItem.id == key,
                ConversationExtraItem.conversation_id == conversation.id,
            )
        )
        if rowcount(deleted):
            return
    raise ItemNotFound(
        f"Item with id '{item_id}' can't be deleted alone; delete the message it belongs to.",
        extra={"param": "item_id"},
    )

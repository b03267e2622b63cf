"""``/v1/conversations``: OpenAI's Conversations API over native conversations.

A conversation is the caller's own (in the workspace it was made in); anyone else gets a
404. ``client.conversations.*`` of the ``openai`` client and the Agents SDK's
``OpenAIConversationsSession`` work against it unmodified.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from agentmesh.chat.conversations import service as native
from agentmesh.chat.conversations_api import store
from agentmesh.chat.openai_compat.errors import OpenAIRoute
from agentmesh.chat.openai_compat.router import ERRORS
from agentmesh.chat.responses.items import normalize
from agentmesh.chat.responses.params import check_metadata
from agentmesh.shared.access import Access, access_to
from agentmesh.shared.db import Session
from agentmesh.shared.deps import AppOutbox
from agentmesh.shared.events.contracts import ConversationCreated, ConversationDeleted

router = APIRouter(prefix="/v1/conversations", tags=["openai"], route_class=OpenAIRoute)
Caller = Annotated[Access, access_to("viewer", "chat")]


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] | None = Field(default=None, max_length=20)
    metadata: dict[str, str] | None = None


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, str]


class ItemsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] = Field(min_length=1, max_length=20)


def _page(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "has_more": False,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }


@router.post("", responses=ERRORS)
async def create_conversation(
    body: ConversationCreate, access: Caller, session: Session, outbox: AppOutbox
) -> Any:
    """A new conversation, with up to 20 first items. Its agent is the first response's."""
    check_metadata(body.metadata)
    new = normalize(body.items, "items")
    conversation, meta = await store.create(session, access, body.metadata)
    await store.add(session, access, conversation, new)
    await outbox.add(
        session,
        ConversationCreated(
            conversation_id=conversation.id,
            user_id=access.user_id,
            workspace_id=access.workspace_id,
            agent_id=conversation.agent_id,
        ),
    )
    return JSONResponse(store.as_object(conversation, meta))


@router.get("/{id}", responses=ERRORS)
async def get_conversation(id: str, access: Caller, session: Session) -> Any:
    return JSONResponse(store.as_object(*await store.get(session, access, id)))


@router.post("/{id}", responses=ERRORS)
async def update_conversation(
    id: str, body: ConversationUpdate, access: Caller, session: Session
) -> Any:
    """Replace the conversation's metadata."""
    check_metadata(body.metadata)
    conversation, meta = await store.get(session, access, id)
    if meta is None:  # a native conversation, first seen through this API
        meta = store.ConversationMeta(
            conversation_id=conversation.id,
            user_id=access.user_id,
            workspace_id=access.workspace_id,
        )
        session.add(meta)
    meta.metadata_ = body.metadata
    await session.flush()
    return JSONResponse(store.as_object(conversation, meta))


@router.delete("/{id}", responses=ERRORS)
async def delete_conversation(id: str, access: Caller, session: Session, outbox: AppOutbox) -> Any:
    """Delete the conversation with its items (as the native API does: its runs too)."""
    conversation, _ = await store.get(session, access, id)
    await session.delete(conversation)
    await outbox.add(
        session,
        ConversationDeleted(
            conversation_id=conversation.id,
            user_id=conversation.user_id,
            workspace_id=access.workspace_id,
        ),
    )
    native.forget_converted()
    return JSONResponse(
        {
            "id": store.conversation_id(conversation.id),
            "object": "conversation.deleted",
            "deleted": True,
        }
    )


@router.get("/{id}/items", responses=ERRORS)
async def list_items(
    id: str,
    access: Caller,
    session: Session,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> Any:
    """The conversation's items, a cursor page (``after``: an item id)."""
    conversation, _ = await store.get(session, access, id)
    items = await store.items(session, conversation)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = _page(items[:limit])
    page["has_more"] = len(items) > limit
    return JSONResponse(page)


@router.post("/{id}/items", responses=ERRORS)
async def create_items(id: str, body: ItemsCreate, access: Caller, session: Session) -> Any:
    """Append up to 20 items."""
    conversation, _ = await store.get(session, access, id)
    new = normalize(body.items, "items")
    return JSONResponse(_page(await store.add(session, access, conversation, new)))


@router.get("/{id}/items/{item_id}", responses=ERRORS)
async def get_item(id: str, item_id: str, access: Caller, session: Session) -> Any:
    conversation, _ = await store.get(session, access, id)
    return JSONResponse(await store.find(session, conversation, item_id))


@router.delete("/{id}/items/{item_id}", responses=ERRORS)
async def delete_item(id: str, item_id: str, access: Caller, session: Session) -> Any:
    """Delete one item; the conversation is returned."""
    conversation, meta = await store.get(session, access, id)
    await store.remove(session, conversation, item_id)
    return JSONResponse(store.as_object(conversation, meta))

"""``/api/v1/conversations``: CRUD, history, and turns (streamed or not)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status

from agentmesh.chat.conversations import repository, service
from agentmesh.chat.conversations.schemas import (
    ConversationCreate,
    ConversationOut,
    ConversationPage,
    ConversationUpdate,
    MessageEdit,
    MessageIn,
    MessageOut,
    MessagePage,
    RegenerateIn,
)
from agentmesh.chat.conversations.turns import start_turn
from agentmesh.chat.deps import AppState
from agentmesh.chat.models import AgentSnapshot, Conversation
from agentmesh.shared.access import Access, access_to
from agentmesh.shared.db import ReadConnection, Session
from agentmesh.shared.deps import AppOutbox
from agentmesh.shared.errors import NotFound
from agentmesh.shared.events.contracts import ConversationCreated, ConversationDeleted
from agentmesh.shared.openapi import sse_content
from agentmesh.shared.pagination import CURSOR_RESPONSES, DEFAULT_LIMIT, Cursor, Limit

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])
#: Every route: any member of the workspace (viewer and up); API keys need ``chat``.
Chatter = Annotated[Access, access_to("viewer", "chat")]
NOT_YOURS: dict[int | str, dict[str, Any]] = {
    403: {"description": "An API key without the chat scope"},
    404: {"description": "No such conversation, or not yours"},
}
TURN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **NOT_YOURS,
    200: {
        "description": "The assistant message; with stream: true, text/event-stream",
        "content": sse_content(),
    },
    402: {"description": "Over the monthly budget"},
    409: {"description": "The agent was deleted"},
    502: {"description": "The agent's model provider failed or could not be reached"},
    503: {"description": "The model provider is rate limiting or unavailable"},
    504: {"description": "The model provider did not answer in time"},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ConversationOut,
    responses={403: NOT_YOURS[403], 404: {"description": "No such agent in your workspace"}},
)
async def create(
    body: ConversationCreate, caller: Chatter, session: Session, outbox: AppOutbox
) -> ConversationOut:
    """Start a conversation with an agent of your workspace. It stays yours: other
    members of the workspace don't see it."""
    snapshot = await session.get(AgentSnapshot, body.agent_id)
    if (
        snapshot is None
        or snapshot.deleted
        or (snapshot.workspace_id != caller.workspace_id and not caller.is_platform_admin)
    ):
        raise NotFound("agent_id: no such agent in your workspace.", extra={"field": "agent_id"})
    conversation = Conversation(
        workspace_id=snapshot.workspace_id,
        user_id=caller.user_id,
        agent_id=body.agent_id,
        title=body.title,
        auto_title=body.auto_title and body.title is None,
        variables=body.variables,
        timezone=body.timezone,
    )
    session.add(conversation)
    await session.flush()
    await session.refresh(conversation)
    await outbox.add(
        session,
        ConversationCreated(
            conversation_id=conversation.id,
            user_id=caller.user_id,
            agent_id=body.agent_id,
            workspace_id=conversation.workspace_id,
        ),
    )
    return ConversationOut.model_validate(conversation)


@router.get("", response_model=ConversationPage, responses=CURSOR_RESPONSES)
async def list_conversations(
    caller: Chatter,
    connection: ReadConnection,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Any:
    """Your conversations in the workspace your token is bound to, newest first."""
    rows, next_cursor = await repository.conversations(connection, caller, cursor, limit)
    return {"items": rows, "next_cursor": next_cursor}  # the response model reads the rows


@router.get("/{conversation_id}", response_model=ConversationOut, responses=NOT_YOURS)
async def get(conversation_id: uuid.UUID, caller: Chatter, session: Session):
    return ConversationOut.model_validate(await service.get_owned(session, caller, conversation_id))


@router.patch("/{conversation_id}", response_model=ConversationOut, responses=NOT_YOURS)
async def rename(
    conversation_id: uuid.UUID,
    body: ConversationUpdate,
    caller: Chatter,
    session: Session,
) -> ConversationOut:
    conversation = await service.get_owned(session, caller, conversation_id)
    conversation.title, conversation.auto_title = body.title, False
    conversation.updated_at = datetime.now(UTC)
    await session.flush()
    return ConversationOut.model_validate(conversation)


@router.delete("/{conversation_id}", status_code=204, responses=NOT_YOURS)
async def delete(
    conversation_id: uuid.UUID, caller: Chatter, session: Session, outbox: AppOutbox
) -> Response:
    """Delete a conversation with its messages and runs."""
    conversation = await service.get_owned(session, caller, conversation_id)
    await session.delete(conversation)
    await outbox.add(
        session,
        ConversationDeleted(
            conversation_id=conversation.id,
            user_id=conversation.user_id,
            workspace_id=conversation.workspace_id,
        ),
    )
    service.forget_converted()
    return Response(status_code=204)


@router.get(
    "/{conversation_id}/messages",
    response_model=MessagePage,
    responses={**NOT_YOURS, **CURSOR_RESPONSES},
)
async def history(
    conversation_id: uuid.UUID,
    caller: Chatter,
    connection: ReadConnection,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    """Every message, oldest first: earlier variants (regenerated answers, edited
    questions) are kept and linked by ``parent_id``; the current branch ends at the newest."""
    rows, next_cursor = await service.history(connection, caller, conversation_id, cursor, limit)
    return {"items": rows, "next_cursor": next_cursor}  # the response model reads the rows


@router.post("/{conversation_id}/messages", responses=TURN_RESPONSES, response_model=MessageOut)
async def post_message(
    conversation_id: uuid.UUID,
    body: MessageIn,
    caller: Chatter,
    session: Session,
    state: AppState,
    request: Request,
) -> Any:
    """Send a message and run the agent. ``stream: false`` answers with the assistant
    message when the run ends; ``stream: true`` with Server-Sent Events: ``run.started``,
    ``message.delta``, ``tool.call``, ``tool.result``, ``message.completed`` (with usage),
    ``run.failed`` (problem details), ``run.cancelled``, then ``done``."""
    return await start_turn(
        request, state, session, caller, conversation_id, content=body.content, stream=body.stream
    )


@router.post(
    "/{conversation_id}/messages/{message_id}/regenerate",
    responses=TURN_RESPONSES,
    response_model=MessageOut,
)
async def regenerate(
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    body: RegenerateIn,
    caller: Chatter,
    session: Session,
    state: AppState,
    request: Request,
) -> Any:
    """Answer the question of assistant message ``message_id`` again. The new answer
    replaces it in the branch; the old one stays as a prior variant (same ``parent_id``)."""
    return await start_turn(
        request, state, session, caller, conversation_id, regenerate=message_id, stream=body.stream
    )


@router.patch(
    "/{conversation_id}/messages/{message_id}", responses=TURN_RESPONSES, response_model=MessageOut
)
async def edit(
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    body: MessageEdit,
    caller: Chatter,
    session: Session,
    state: AppState,
    request: Request,
) -> Any:
    """Edit a user message: the conversation branches from that point (the edited
    question gets a new answer; the old question and everything after it stay as a variant)."""
    return await start_turn(
        request,
        state,
        session,
        caller,
        conversation_id,
        content=body.content,
        edit=message_id,
        stream=body.stream,
    )

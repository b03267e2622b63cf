"""The conversations domain's read queries: a page of the caller's conversations, a page
of one conversation's messages with its ownership check, and a turn's reads (the
conversation with its agent and budget, a message, the branch), each in one statement.

They run on the request's ``ReadConnection`` (autocommit: no ``BEGIN`` and ``ROLLBACK``
round trips) and return Core rows named as ``ConversationOut``'s and ``MessageOut``'s
fields, not ORM objects. The statements are built once; a request binds its values, a
cursor's among them. The cursor is the shape of every list (``shared.pagination``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    Select,
    and_,
    bindparam,
    exists,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from agentmesh.chat.models import WHOLE_WORKSPACE, AgentSnapshot, Budget, Conversation, Message
from agentmesh.shared.access import Access
from agentmesh.shared.pagination import InvalidCursor, decode_cursor, encode_cursor

CONVERSATION_COLUMNS = (
    Conversation.id,
    Conversation.workspace_id,
    Conversation.agent_id,
    Conversation.title,
    Conversation.auto_title,
    Conversation.variables,
    Conversation.timezone,
    Conversation.created_at,
    Conversation.updated_at,
)
MESSAGE_COLUMNS = (
    Message.id,
    Message.conversation_id,
    Message.parent_id,
    Message.role,
    Message.content,
    Message.tool_calls,
    Message.citations,
    Message.status,
    Message.run_id,
    Message.agent_version,
    Message.input_tokens,
    Message.output_tokens,
    Message.created_at,
)
#: The order of a page and what its cursor holds: unique together.
CONVERSATION_KEY = (Conversation.created_at, Conversation.id)
MESSAGE_KEY = (Message.created_at, Message.id)
_LIMIT = bindparam("limit", type_=Integer)
Query = Select[*tuple[Any, ...]]


def _after(key: Sequence[InstrumentedAttribute[Any]], *, descending: bool) -> ColumnElement[bool]:
    """The rows past the cursor's values, bound as ``after_0``, ``after_1``..."""
    last = tuple_(*(bindparam(f"after_{i}", type_=column.type) for i, column in enumerate(key)))
    return tuple_(*key) < last if descending else tuple_(*key) > last


def _after_values(cursor: str, key: Sequence[InstrumentedAttribute[Any]]) -> dict[str, Any]:
    return {f"after_{i}": value for i, value in enumerate(decode_cursor(cursor, key))}


def budget_applies(workspace_id: Any, user_id: Any) -> Any:
    """Whether a run of ``user_id`` in ``workspace_id`` is limited: the member has a budget
    there, or the whole workspace has one."""
    return exists().where(
        Budget.workspace_id == workspace_id, Budget.user_id.in_([user_id, WHOLE_WORKSPACE])
    )


def _conversations(*, after: bool) -> Query:
    """The caller's own conversations in their workspace, newest first (``service.visible``:
    private even to the other members, and in lists to platform admins too)."""
    query = select(*CONVERSATION_COLUMNS).where(
        Conversation.workspace_id == bindparam("workspace_id"),
        Conversation.user_id == bindparam("user_id"),
    )
    if after:
        query = query.where(_after(CONVERSATION_KEY, descending=True))
    return query.order_by(*(column.desc() for column in CONVERSATION_KEY)).limit(_LIMIT)


def _messages(*, any_owner: bool, after: bool) -> Query:
    """A conversation's messages oldest first, joined to the conversation so that one
    statement also says whether the caller may open it (``service.owns``): no row at all
    when not, one row of nulls when it has no message past the cursor."""
    joined = Message.conversation_id == Conversation.id
    if after:
        joined = and_(joined, _after(MESSAGE_KEY, descending=False))
    query = (
        select(*MESSAGE_COLUMNS)
        .select_from(Conversation)
        .outerjoin(Message, joined)
        .where(Conversation.id == bindparam("conversation_id"))
    )
    if not any_owner:
        query = query.where(
            Conversation.workspace_id == bindparam("workspace_id"),
            Conversation.user_id == bindparam("user_id"),
        )
    return query.order_by(*MESSAGE_KEY).limit(_LIMIT)


_CONVERSATIONS = {after: _conversations(after=after) for after in (False, True)}
_MESSAGES = {
    (any_owner, after): _messages(any_owner=any_owner, after=after)
    for any_owner in (False, True)
    for after in (False, True)
}


def _turn(*, any_owner: bool) -> Query:
    """What a turn reads of a conversation the caller may open (``service.owns``): what
    the run and its prompt use, its agent's current snapshot (nulls when unknown), and
    whether a budget applies to its owner's runs. No row when it is not theirs."""
    query = (
        select(
            Conversation.workspace_id,
            Conversation.user_id,
            Conversation.title,
            Conversation.auto_title,
            Conversation.summary,
            Conversation.summary_upto,
            Conversation.variables,
            Conversation.timezone,
            AgentSnapshot.agent_id,
            AgentSnapshot.workspace_id.label("agent_workspace_id"),
            AgentSnapshot.version,
            AgentSnapshot.config,
            AgentSnapshot.deleted,
            budget_applies(Conversation.workspace_id, Conversation.user_id).label("has_budget"),
        )
        .select_from(Conversation)
        .outerjoin(AgentSnapshot, AgentSnapshot.agent_id == Conversation.agent_id)
        .where(Conversation.id == bindparam("conversation_id"))
    )
    if not any_owner:
        query = query.where(
            Conversation.workspace_id == bindparam("workspace_id"),
            Conversation.user_id == bindparam("user_id"),
        )
    return query


_TURN = {any_owner: _turn(any_owner=any_owner) for any_owner in (False, True)}
_MESSAGE: Query = select(Message.id, Message.parent_id).where(
    Message.id == bindparam("id"),
    Message.conversation_id == bindparam("conversation_id"),
    Message.role == bindparam("role"),
)
#: The chain of ``parent_id`` from ``leaf`` (default: the newest message) up to ``limit``
#: messages, oldest first: what ``service.to_langchain`` and the items of the
#: Conversations API read. A message without tool calls has null ``tool_calls`` (read as
#: none): most have none, and a null is not decoded (a turn reads the whole branch).
BRANCH = text("""
WITH RECURSIVE branch AS (
  SELECT m.*, 1 AS depth FROM chat.messages m
  WHERE m.id = COALESCE(CAST(:leaf AS uuid), (SELECT id FROM chat.messages
                 WHERE conversation_id = :conversation_id ORDER BY id DESC LIMIT 1))
    AND m.conversation_id = :conversation_id
  UNION ALL
  SELECT m.*, b.depth + 1 FROM chat.messages m JOIN branch b ON m.id = b.parent_id
  WHERE b.depth < :limit)
SELECT id, parent_id, role, content, NULLIF(tool_calls, '[]'::jsonb) AS tool_calls, status
FROM branch ORDER BY depth DESC
""")


def _page(rows: list[Row[Any]], limit: int) -> tuple[list[Row[Any]], str | None]:
    """The first ``limit`` of ``limit + 1`` rows, and the cursor after them if more follow."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor([last.created_at, last.id])


async def conversations(
    connection: AsyncConnection, caller: Access, cursor: str | None, limit: int
) -> tuple[list[Row[Any]], str | None]:
    """One page of the caller's conversations in their workspace, newest first."""
    values = {"workspace_id": caller.workspace_id, "user_id": caller.user_id, "limit": limit + 1}
    if cursor:
        values |= _after_values(cursor, CONVERSATION_KEY)
    result = await connection.execute(_CONVERSATIONS[bool(cursor)], values)
    return _page(list(result.all()), limit)


async def messages(
    connection: AsyncConnection,
    caller: Access,
    conversation_id: uuid.UUID,
    cursor: str | None,
    limit: int,
) -> tuple[list[Row[Any]], str | None] | None:
    """One page of the messages of a conversation the caller may open, oldest first;
    None when there is no such conversation or it is not theirs."""
    values: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit + 1}
    if not caller.is_platform_admin:
        values |= {"workspace_id": caller.workspace_id, "user_id": caller.user_id}
    statement = _MESSAGES[caller.is_platform_admin, bool(cursor)]
    if cursor:
        try:
            values |= _after_values(cursor, MESSAGE_KEY)
        except InvalidCursor:
            # Someone else's conversation stays a 404 whatever the cursor: the check first.
            values["limit"] = 1
            statement = _MESSAGES[caller.is_platform_admin, False]
            if (await connection.execute(statement, values)).first() is None:
                return None
            raise
    rows = list((await connection.execute(statement, values)).all())
    if not rows:
        return None
    if rows[0].id is None:  # the conversation, with no message past the cursor
        return [], None
    return _page(rows, limit)


async def turn(
    connection: AsyncConnection, caller: Access, conversation_id: uuid.UUID
) -> Row[Any] | None:
    """The conversation a turn continues, with its agent's snapshot and budget (``_turn``);
    None when there is no such conversation or it is not theirs."""
    values: dict[str, Any] = {"conversation_id": conversation_id}
    if not caller.is_platform_admin:
        values |= {"workspace_id": caller.workspace_id, "user_id": caller.user_id}
    return (await connection.execute(_TURN[caller.is_platform_admin], values)).first()


async def message(
    connection: AsyncConnection, conversation_id: uuid.UUID, id: uuid.UUID, role: str
) -> Row[Any] | None:
    """Message ``id`` (its ``id`` and ``parent_id``) if it is a ``role`` message of the
    conversation; else None."""
    values = {"id": id, "conversation_id": conversation_id, "role": role}
    return (await connection.execute(_MESSAGE, values)).first()


async def branch(
    db: AsyncConnection | AsyncSession,
    conversation_id: uuid.UUID,
    leaf: uuid.UUID | None,
    limit: int,
) -> list[Row[Any]]:
    """``BRANCH``, on a turn's autocommit connection or a request's session."""
    values = {"leaf": leaf, "conversation_id": conversation_id, "limit": limit}
    return list((await db.execute(BRANCH, values)).all())

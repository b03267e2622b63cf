from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _no_nul(value: str) -> str:
    # Postgres text can't hold NUL; a turn's question is written alongside its model call,
    # so it must be refused up front (422), not fail the run later.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: A question or an edited question.
Content = Annotated[str, Field(min_length=1, max_length=100_000), AfterValidator(_no_nul)]


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: uuid.UUID
    title: str | None = Field(default=None, min_length=1, max_length=200)
    #: Generate a title from the first exchange (with the agent's model) when none is given.
    auto_title: bool = True


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)


class ConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    #: The workspace of the conversation's agent; the conversation stays its starter's.
    workspace_id: uuid.UUID
    agent_id: uuid.UUID
    title: str | None
    auto_title: bool
    created_at: datetime
    updated_at: datetime


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


class MessageEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Content
    stream: bool = False


class RegenerateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: bool = False


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Content
    stream: bool = False


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    conversation_id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str
    content: str
    tool_calls: list[dict[str, Any]]
    #: The knowledge base passages the answer's model was given.
    citations: list[dict[str, Any]] = Field(default_factory=list)
    status: str
    run_id: uuid.UUID | None
    agent_version: int | None
    input_tokens: int | None
    output_tokens: int | None
    created_at: datetime


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None

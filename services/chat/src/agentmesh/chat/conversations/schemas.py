from __future__ import annotations

import functools
import uuid
import zoneinfo
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from agentmesh.shared.templates import RESERVED


def _no_nul(value: str) -> str:
    # Postgres text can't hold NUL; a turn's question is written alongside its model call,
    # so it must be refused up front (422), not fail the run later.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: A question or an edited question.
Content = Annotated[str, Field(min_length=1, max_length=100_000), AfterValidator(_no_nul)]


def _variable_name(value: str) -> str:
    if value in RESERVED:
        raise ValueError(f"{value!r} is a built-in template name, not a conversation variable")
    return value


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules"}


def _timezone(value: str) -> str:
    # The IANA list, not any path ZoneInfo would open ("Europe" is a directory, "zone.tab"
    # a table, "localtime" the host's own setting).
    if value not in _zones():
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Paris)")
    return value


#: A key of a conversation's ``variables``: what ``{{key}}`` names in the instructions.
VariableName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"),
    AfterValidator(_variable_name),
]
VariableValue = Annotated[str, Field(max_length=2000), AfterValidator(_no_nul)]
TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_timezone)]


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: uuid.UUID
    title: str | None = Field(default=None, min_length=1, max_length=200)
    #: Generate a title from the first exchange (with the agent's model) when none is given.
    auto_title: bool = True
    #: Filled into the agent's instructions: ``{{key}}``. At most 50 keys.
    variables: dict[VariableName, VariableValue] = Field(default_factory=dict, max_length=50)
    #: IANA zone of ``{{date}}`` and ``{{datetime}}`` (default UTC).
    timezone: TimeZone | None = None


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
    variables: dict[str, str] = Field(default_factory=dict)
    timezone: str | None = None
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

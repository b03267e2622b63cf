from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Tag = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=r"^[\w.:-]+$")]


class ToolRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, examples=["calculator"])
    config: dict[str, Any] = Field(default_factory=dict)


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_tokens: int = Field(default=4000, ge=256, le=200_000)
    summarize: bool = False


def _not_null(schema: dict[str, Any]) -> None:
    """For a PATCH field that may be left out (kept as is) but not be null: its schema
    shows no ``default: null``."""
    schema.pop("default", None)


class AgentFields(BaseModel):
    """Everything an agent is made of; every field optional, for PATCH."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(None, min_length=1, max_length=200, json_schema_extra=_not_null)
    description: str | None = Field(default=None, max_length=2000)
    instructions: str = Field(None, max_length=100_000, json_schema_extra=_not_null)
    provider_id: uuid.UUID | None = None
    model: str = Field(None, min_length=1, max_length=200, json_schema_extra=_not_null)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)
    tools: list[ToolRef] | None = Field(default=None, max_length=32)
    knowledge_base_ids: list[uuid.UUID] | None = Field(default=None, max_length=32)
    memory: MemoryConfig | None = None
    tags: list[Tag] | None = Field(default=None, max_length=32)
    metadata: dict[str, Any] | None = None


class AgentCreate(AgentFields):
    name: str = Field(min_length=1, max_length=200, examples=["Keeper"])
    instructions: str = Field(default="", max_length=100_000)
    model: str = Field(default="offline", min_length=1, max_length=200)


class AgentOut(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID
    version: int
    name: str
    description: str | None
    instructions: str
    provider_id: uuid.UUID | None
    model: str
    temperature: float | None
    max_output_tokens: int | None
    tools: list[ToolRef]
    knowledge_base_ids: list[uuid.UUID]
    memory: MemoryConfig
    tags: list[str]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class AgentPage(BaseModel):
    items: list[AgentOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class VersionOut(BaseModel):
    version: int
    created_at: datetime
    restored_from: int | None
    config: dict[str, Any]


Sort = Literal["created_at", "-created_at", "updated_at", "-updated_at"]

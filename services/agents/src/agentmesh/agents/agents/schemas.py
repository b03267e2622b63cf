from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agentmesh.shared.fields import NotNull
from agentmesh.shared.pagination import Page

Tag = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=r"^[\w.:-]+$")]


class ToolRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, examples=["calculator"])
    config: dict[str, Any] = Field(default_factory=dict)


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_tokens: int = Field(default=4000, ge=256, le=200_000)
    summarize: bool = False


class KnowledgeConfig(BaseModel):
    """How the agent uses its knowledge bases: ``tool``, the model searches them when it
    wants (``knowledge_search``); ``always``, each user message is searched before the
    model is called and the passages found go into the prompt (for models without tools).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["tool", "always"] = "tool"
    top_k: int | None = Field(
        default=None, ge=1, le=20, description="Passages per search (always: default 5)"
    )
    min_score: float | None = Field(
        default=None, ge=0, le=1, description="Passages scoring less are left out"
    )


class AgentFields(BaseModel):
    """Everything an agent is made of; every field optional, for PATCH."""

    model_config = ConfigDict(extra="forbid")

    name: str = NotNull(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    instructions: str = NotNull(max_length=100_000)
    provider_id: uuid.UUID | None = None
    model: str = NotNull(min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)
    tools: list[ToolRef] | None = Field(default=None, max_length=32)
    knowledge_base_ids: list[uuid.UUID] | None = Field(default=None, max_length=32)
    memory: MemoryConfig | None = None
    knowledge: KnowledgeConfig | None = None
    tags: list[Tag] | None = Field(default=None, max_length=32)
    metadata: dict[str, Any] | None = None


class AgentCreate(AgentFields):
    name: str = Field(min_length=1, max_length=200, examples=["Keeper"])
    instructions: str = Field(default="", max_length=100_000)
    model: str = Field(default="offline", min_length=1, max_length=200)


class AgentOut(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID = Field(description="Who created it")
    workspace_id: uuid.UUID
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
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    tags: list[str]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class AgentPage(Page[AgentOut]):
    pass


class VersionOut(BaseModel):
    version: int
    created_at: datetime
    restored_from: int | None
    config: dict[str, Any]


class VersionPage(Page[VersionOut]):
    pass


Sort = Literal["created_at", "-created_at", "updated_at", "-updated_at"]

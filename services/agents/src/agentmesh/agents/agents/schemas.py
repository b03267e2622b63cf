from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agentmesh.shared.fields import NotNull
from agentmesh.shared.pagination import Page
from agentmesh.shared.templates import TemplateError, check

Tag = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=r"^[\w.:-]+$")]


ToolPolicy = Literal["always_allow", "always_ask", "never"]


class ToolRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, examples=["calculator"])
    config: dict[str, Any] = Field(default_factory=dict)
    #: Whether a call runs, waits for a person's approval, or is refused. Default:
    #: always_allow for built-ins, always_ask for MCP tools; an MCP ref may give one per
    #: tool name.
    policy: ToolPolicy | dict[str, ToolPolicy] | None = Field(
        default=None,
        exclude_if=lambda policy: policy is None,
        description="always_allow (built-ins' default), always_ask (MCP tools' default) or "
        "never; for an MCP ref, one policy or one per tool name",
    )

    @model_validator(mode="after")
    def _per_tool_only_for_mcp(self) -> ToolRef:
        if isinstance(self.policy, dict) and self.id != "mcp":
            raise ValueError("a policy per tool name is for MCP tools only")
        return self


def _template(value: str) -> str:
    """Instructions may hold variables only (``agentmesh.shared.templates``)."""
    try:
        check(value)
    except TemplateError as exc:
        raise PydanticCustomError(
            "invalid_template", "{reason}", {"reason": str(exc), "expression": exc.expression}
        ) from None
    return value


Instructions = Annotated[str, AfterValidator(_template)]


class Example(BaseModel):
    """A few-shot turn: placed after the instructions, before the conversation."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=10_000)
    assistant: str = Field(min_length=1, max_length=10_000)


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_tokens: int = Field(default=4000, ge=256, le=200_000)
    summarize: bool = False


class FallbackModel(BaseModel):
    """A model tried when the agent's own fails before answering (rate limit, 5xx,
    timeout, refused connection). No ``provider_id``: the agent's own provider."""

    model_config = ConfigDict(extra="forbid")

    provider_id: uuid.UUID | None = None
    model: str = Field(min_length=1, max_length=200, examples=["gpt-4o-mini"])


#: Most fallback models an agent may list.
MAX_FALLBACKS = 5


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
    instructions: Instructions = NotNull(max_length=100_000)
    provider_id: uuid.UUID | None = None
    model: str = NotNull(min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)
    tools: list[ToolRef] | None = Field(default=None, max_length=32)
    knowledge_base_ids: list[uuid.UUID] | None = Field(default=None, max_length=32)
    memory: MemoryConfig | None = None
    fallbacks: list[FallbackModel] | None = Field(default=None, max_length=MAX_FALLBACKS)
    knowledge: KnowledgeConfig | None = None
    tags: list[Tag] | None = Field(default=None, max_length=32)
    metadata: dict[str, Any] | None = None
    examples: list[Example] | None = Field(default=None, max_length=20)


class AgentCreate(AgentFields):
    name: str = Field(min_length=1, max_length=200, examples=["Keeper"])
    instructions: Instructions = Field(default="", max_length=100_000)
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
    fallbacks: list[FallbackModel] = Field(default_factory=list)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    tags: list[str]
    metadata: dict[str, Any]
    examples: list[Example] = Field(default_factory=list)
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

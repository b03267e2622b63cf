"""Every event in the catalog, as a versioned Pydantic model imported by both sides.

Rules for changing a contract:
- adding an optional field (with a default) keeps the version;
- anything an older payload would fail on (a new required field, a narrower type) needs a
  new ``version`` and a new sample under ``libs/shared/tests/contracts/samples``.
The contract test loads every stored sample of every version and fails if the current
model rejects one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from agentmesh.shared.events.envelope import EventPayload

#: Every resource event names its workspace (since version 2 of its contract).
WORKSPACE_ID = (
    "The workspace the resource belongs to (version 2). Absent in version 1 events: then "
    "it is the owner's personal workspace, whose id is the owner's user id."
)

# --------------------------------------------------------------------------- identity


class UserRegistered(EventPayload):
    subject = "identity.user.registered"
    aggregate_field = "user_id"
    description = "A user signed up."

    user_id: UUID
    email: str
    name: str
    roles: list[str] = Field(default_factory=lambda: ["user"])


class UserUpdated(EventPayload):
    subject = "identity.user.updated"
    aggregate_field = "user_id"
    description = "A user's profile, roles or active flag changed."

    user_id: UUID
    email: str
    name: str
    roles: list[str] = Field(default_factory=list)
    is_active: bool = True


class UserDeactivated(EventPayload):
    subject = "identity.user.deactivated"
    aggregate_field = "user_id"
    description = "A user can no longer log in; caches of their tokens must be evicted."

    user_id: UUID
    reason: str | None = None


class UserDeleted(EventPayload):
    subject = "identity.user.deleted"
    aggregate_field = "user_id"
    description = "Erasure started: every service deletes this user's data."

    user_id: UUID
    requested_at: datetime


class SessionsRevoked(EventPayload):
    subject = "identity.session.revoked"
    aggregate_field = "user_id"
    description = (
        "Login sessions ended (logout, password change, a reused refresh token); "
        "their access tokens are refused from now on."
    )

    user_id: UUID
    session_ids: list[UUID]
    reason: str | None = None


class ApiKeyCreated(EventPayload):
    subject = "identity.apikey.created"
    aggregate_field = "api_key_id"
    description = "An API key was issued (never carries the secret)."

    api_key_id: str
    user_id: UUID
    name: str
    scopes: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None


class ApiKeyRevoked(EventPayload):
    subject = "identity.apikey.revoked"
    aggregate_field = "api_key_id"
    description = "An API key was revoked; gateways evict its cached token."

    api_key_id: str
    user_id: UUID


class WorkspaceCreated(EventPayload):
    subject = "identity.workspace.created"
    aggregate_field = "workspace_id"
    description = "A workspace was created; its creator is its owner."

    workspace_id: UUID
    name: str
    personal: bool = False
    owner_id: UUID


class WorkspaceUpdated(EventPayload):
    subject = "identity.workspace.updated"
    aggregate_field = "workspace_id"
    description = "A workspace was renamed."

    workspace_id: UUID
    name: str


class WorkspaceDeleted(EventPayload):
    subject = "identity.workspace.deleted"
    aggregate_field = "workspace_id"
    description = "A workspace's deletion started: every service deletes its data."

    workspace_id: UUID
    requested_at: datetime


class MembershipAdded(EventPayload):
    subject = "identity.membership.added"
    aggregate_field = "workspace_id"
    description = "A user joined a workspace with a role."

    workspace_id: UUID
    user_id: UUID
    role: str


class MembershipChanged(EventPayload):
    subject = "identity.membership.changed"
    aggregate_field = "workspace_id"
    description = "A member's role in a workspace changed (ownership transfer included)."

    workspace_id: UUID
    user_id: UUID
    role: str


class MembershipRemoved(EventPayload):
    subject = "identity.membership.removed"
    aggregate_field = "workspace_id"
    description = "A user left or was removed from a workspace; their access ends at once."

    workspace_id: UUID
    user_id: UUID


# --------------------------------------------------------------------------- agents


class AgentConfig(BaseModel):
    """The full config snapshot chat needs to run an agent. Never carries secrets."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    description: str | None = None
    instructions: str = ""
    provider_id: UUID | None = None
    model: str = "offline"
    temperature: float | None = None
    max_output_tokens: int | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    knowledge_base_ids: list[UUID] = Field(default_factory=list)
    memory: dict[str, Any] = Field(default_factory=dict)
    #: ``[{provider_id?, model}]``, tried in order when the agent's model fails to answer.
    fallbacks: list[dict[str, Any]] = Field(default_factory=list)
    #: ``{mode: tool|always, top_k, min_score}``; empty (older agents): ``tool``.
    knowledge: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: Few-shot turns ``[{user, assistant}]``, after the instructions.
    examples: list[dict[str, str]] = Field(default_factory=list)


class AgentCreated(EventPayload):
    subject = "agents.agent.created"
    aggregate_field = "agent_id"
    description = "An agent was created (version 1)."
    version = 2

    agent_id: UUID
    owner_id: UUID
    workspace_id: UUID | None = Field(default=None, description=WORKSPACE_ID)
    agent_version: int = Field(ge=1)
    config: AgentConfig


class AgentUpdated(EventPayload):
    subject = "agents.agent.updated"
    aggregate_field = "agent_id"
    description = "An agent got a new current version (an update or a restore)."
    version = 2

    agent_id: UUID
    owner_id: UUID
    workspace_id: UUID | None = Field(default=None, description=WORKSPACE_ID)
    agent_version: int = Field(ge=1)
    config: AgentConfig


class AgentDeleted(EventPayload):
    subject = "agents.agent.deleted"
    aggregate_field = "agent_id"
    description = "An agent was (soft) deleted and can no longer be chatted with."
    version = 2

    agent_id: UUID
    owner_id: UUID
    workspace_id: UUID | None = Field(default=None, description=WORKSPACE_ID)
    agent_version: int = Field(ge=1)


class KnowledgeDocumentIndexed(EventPayload):
    subject = "agents.knowledge.document.indexed"
    aggregate_field = "document_id"
    description = "A knowledge-base document finished ingest (ready or failed)."
    version = 2

    document_id: UUID
    knowledge_base_id: UUID
    owner_id: UUID
    workspace_id: UUID | None = Field(default=None, description=WORKSPACE_ID)
    status: str
    chunk_count: int = 0
    error: str | None = None


class AgentsErasureCompleted(EventPayload):
    subject = "agents.erasure.completed"
    aggregate_field = "user_id"
    description = "The agents service deleted everything of this user."

    user_id: UUID


class AgentsWorkspacePurged(EventPayload):
    subject = "agents.workspace.purged"
    aggregate_field = "workspace_id"
    description = (
        "The agents service deleted everything of a deleted workspace (agents, providers, "
        "MCP servers, knowledge bases); identity removes the workspace once chat has too."
    )

    workspace_id: UUID


# --------------------------------------------------------------------------- chat


class ConversationCreated(EventPayload):
    subject = "chat.conversation.created"
    aggregate_field = "conversation_id"
    description = "A conversation was started with an agent."
    version = 2

    conversation_id: UUID
    user_id: UUID
    workspace_id: UUID | None = Field(default=None, description=WORKSPACE_ID)
    agent_id: UUID


class ConversationDeleted(EventPayload):
    subject = "chat.conversation.deleted"
    aggregate_field = "conversation_id"
    description = "A conversation was deleted."
    version = 2

    conversation_id: UUID
    user_id: UUID
    workspace_id: UUID | None = Field(default=None, description=WORKSPACE_ID)


class MessageCompleted(EventPayload):
    subject = "chat.message.completed"
    aggregate_field = "message_id"
    description = "An assistant message finished; carries the run's usage."
    version = 2

    message_id: UUID
    conversation_id: UUID | None = None
    run_id: UUID
    user_id: UUID
    workspace_id: UUID | None = Field(default=None, description=WORKSPACE_ID)
    agent_id: UUID
    agent_version: int
    model: str
    provider: str
    status: str = "completed"
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: str = "0"
    latency_ms: float | None = None
    time_to_first_token_ms: float | None = None


class ChatErasureCompleted(EventPayload):
    subject = "chat.erasure.completed"
    aggregate_field = "user_id"
    description = "The chat service deleted everything of this user."

    user_id: UUID


class ChatWorkspacePurged(EventPayload):
    subject = "chat.workspace.purged"
    aggregate_field = "workspace_id"
    description = "The chat service deleted everything of a deleted workspace."

    workspace_id: UUID


def personal_workspace(user_id: UUID) -> UUID:
    """A user's personal workspace has the user's id: what a version 1 event (without
    ``workspace_id``) means."""
    return user_id


CATALOG: dict[str, type[EventPayload]] = {
    model.subject: model
    for model in (
        UserRegistered,
        UserUpdated,
        UserDeactivated,
        UserDeleted,
        SessionsRevoked,
        ApiKeyCreated,
        ApiKeyRevoked,
        WorkspaceCreated,
        WorkspaceUpdated,
        WorkspaceDeleted,
        MembershipAdded,
        MembershipChanged,
        MembershipRemoved,
        AgentCreated,
        AgentUpdated,
        AgentDeleted,
        KnowledgeDocumentIndexed,
        AgentsErasureCompleted,
        AgentsWorkspacePurged,
        ConversationCreated,
        ConversationDeleted,
        MessageCompleted,
        ChatErasureCompleted,
        ChatWorkspacePurged,
    )
}


def contract_for(subject: str) -> type[EventPayload]:
    """The payload model of ``subject``; KeyError if it is not in the catalog."""
    return CATALOG[subject]

"""Agent use cases: versioned configs, optimistic concurrency, events with the snapshot."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentmesh.agents.agents import repository
from agentmesh.agents.agents.models import Agent, AgentVersion
from agentmesh.agents.agents.schemas import (
    AgentCreate,
    AgentFields,
    AgentOut,
    AgentPage,
    FallbackModel,
    KnowledgeConfig,
    MemoryConfig,
)
from agentmesh.agents.tools.catalog import BUILTIN_TOOLS
from agentmesh.shared.access import Access
from agentmesh.shared.errors import AppError, NotFound
from agentmesh.shared.events.contracts import (
    AgentConfig,
    AgentCreated,
    AgentDeleted,
    AgentUpdated,
)
from agentmesh.shared.events.outbox import Outbox
from agentmesh.shared.pagination import paginate
from agentmesh.shared.tools.configs import TOOL_CONFIGS


class AgentNotFound(NotFound):
    type, title = "agent-not-found", "Agent not found"


class PreconditionFailed(AppError):
    status, type, title = 412, "precondition-failed", "Precondition Failed"


class InvalidReference(AppError):
    """A referenced tool, provider or knowledge base does not exist in the agent's
    workspace."""

    status, type, title = 422, "invalid-reference", "Invalid reference"


def etag(agent: Agent | Row[Any]) -> str:
    return f'"{agent.version}"'


def check_if_match(agent: Agent, if_match: str | None) -> None:
    """A write with ``If-Match`` must name the current version (412 otherwise)."""
    if if_match is None:
        return
    wanted = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if "*" not in wanted and etag(agent) not in wanted:
        raise PreconditionFailed(
            f"The agent is at version {agent.version}; reload it and apply your change again.",
            headers={"ETag": etag(agent)},
        )


async def _check_provider(
    session: AsyncSession, workspace_id: uuid.UUID, config: dict[str, Any]
) -> None:
    """The provider, knowledge bases and MCP servers an agent names must be of its
    workspace."""
    from agentmesh.agents.knowledge.models import KnowledgeBase

    wanted = {uuid.UUID(str(kb)) for kb in config["knowledge_base_ids"]}
    if wanted:
        owned = set(
            await session.scalars(
                select(KnowledgeBase.id).where(
                    KnowledgeBase.id.in_(wanted), KnowledgeBase.workspace_id == workspace_id
                )
            )
        )
        if wanted - owned:
            raise InvalidReference(
                "knowledge_base_ids: no such knowledge base in this workspace.",
                extra={"field": "knowledge_base_ids"},
            )
    await _check_mcp_servers(session, workspace_id, config["tools"])
    await _check_fallback_providers(session, workspace_id, config["fallbacks"])
    if config["provider_id"] is None:
        return
    from agentmesh.agents.providers.models import Provider

    provider = await session.get(Provider, uuid.UUID(str(config["provider_id"])))
    if provider is None or provider.workspace_id != workspace_id:
        raise InvalidReference(
            "provider_id: no such provider in this workspace; omit it for the built-in "
            "offline one.",
            extra={"field": "provider_id"},
        )


async def _check_fallback_providers(
    session: AsyncSession, workspace_id: uuid.UUID, fallbacks: list[dict[str, Any]]
) -> None:
    """A fallback's provider must be of the agent's workspace, as the agent's own."""
    from agentmesh.agents.providers.models import Provider

    for index, fallback in enumerate(fallbacks):
        if fallback.get("provider_id") is None:
            continue
        provider = await session.get(Provider, uuid.UUID(str(fallback["provider_id"])))
        if provider is None or provider.workspace_id != workspace_id:
            raise InvalidReference(
                f"fallbacks[{index}].provider_id: no such provider in this workspace; omit it "
                "for the agent's own provider.",
                extra={"field": f"fallbacks[{index}].provider_id"},
            )


async def _check_mcp_servers(
    session: AsyncSession, workspace_id: uuid.UUID, tools: list[dict[str, Any]]
) -> None:
    """The MCP servers an agent takes tools from must be of its workspace. They are not contacted:
    a server that is down must not stop an agent from being saved."""
    from agentmesh.agents.mcp.models import McpServer

    for index, tool in enumerate(tools):
        if tool["id"] != "mcp":
            continue
        server = await session.get(McpServer, uuid.UUID(str(tool["config"]["server_id"])))
        if server is None or server.workspace_id != workspace_id:
            raise InvalidReference(
                f"tools[{index}].config.server_id: no such MCP server in this workspace.",
                extra={"field": f"tools[{index}].config.server_id"},
            )


def _check_mcp_config(index: int, config: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from agentmesh.agents.mcp.schemas import McpToolsConfig

    try:
        McpToolsConfig.model_validate(config)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join([f"tools[{index}].config", *(str(part) for part in error["loc"])])
        raise InvalidReference(
            f"{field}: {error['msg']}; an MCP tool's config is "
            '{"server_id": "<uuid>", "tools": ["<tool name>", ...]}.',
            extra={"field": field},
        ) from None


def _check_tool_config(index: int, tool_id: str, config: dict[str, Any]) -> None:
    """A built-in tool's config must fit its model, the bounds ``GET /api/v1/tools`` shows:
    a 422 naming the field (``tools[0].config.timeout_seconds``) otherwise."""
    try:
        TOOL_CONFIGS[tool_id].model_validate(config)
    except ValidationError as exc:
        errors = [
            {
                "loc": ["body", "tools", str(index), "config", *(str(p) for p in error["loc"])],
                "msg": error["msg"],
                "type": error["type"],
            }
            for error in exc.errors()
        ]
        field = ".".join([f"tools[{index}].config", *errors[0]["loc"][4:]])
        raise AppError(
            f"{field}: {errors[0]['msg']}; see the tool's config schema in GET /api/v1/tools.",
            status=422,
            type="validation-error",
            title="Unprocessable Content",
            extra={"field": field, "errors": errors},
        ) from None


def _check_references(config: dict[str, Any]) -> None:
    for index, tool in enumerate(config["tools"]):
        if tool["id"] == "mcp":
            _check_mcp_config(index, tool["config"])
        elif tool["id"] not in BUILTIN_TOOLS:
            raise InvalidReference(
                f"tools[{index}].id: no tool {tool['id']!r}; see GET /api/v1/tools.",
                extra={"field": f"tools[{index}].id"},
            )
        else:
            _check_tool_config(index, tool["id"], tool.get("config") or {})


def _config(fields: AgentFields, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete config: ``base`` (the current one) with the given fields applied."""
    defaults: dict[str, Any] = {
        "name": "",
        "description": None,
        "instructions": "",
        "provider_id": None,
        "model": "offline",
        "temperature": None,
        "max_output_tokens": None,
        "tools": [],
        "knowledge_base_ids": [],
        "memory": MemoryConfig().model_dump(),
        "fallbacks": [],
        "knowledge": KnowledgeConfig().model_dump(),
        "tags": [],
        "metadata": {},
        "examples": [],
    }
    config = {**defaults, **(base or {})}
    config.update(fields.model_dump(mode="json", exclude_unset=True))
    for key in ("tools", "knowledge_base_ids", "tags", "examples"):
        config[key] = config[key] or []
    config["metadata"] = config["metadata"] or {}
    config["fallbacks"] = [  # whole: a fallback given without provider_id has it null
        FallbackModel.model_validate(fallback).model_dump(mode="json")
        for fallback in config["fallbacks"] or []
    ]
    config["memory"] = config["memory"] or MemoryConfig().model_dump()
    config["knowledge"] = config["knowledge"] or KnowledgeConfig().model_dump()
    if config["tags"]:
        config["tags"] = sorted(set(config["tags"]))
    _check_references(config)
    AgentConfig.model_validate(config)  # what chat receives must parse
    return config


def to_out(agent: Agent | Row[Any], config: dict[str, Any]) -> AgentOut:
    return AgentOut.model_validate(_out_fields(agent, config))


def _out_fields(agent: Agent | Row[Any], config: dict[str, Any]) -> dict[str, Any]:
    """``AgentOut``'s fields: the config, with the agent's own columns."""
    return {
        **config,
        "id": agent.id,
        "owner_id": agent.owner_id,
        "workspace_id": agent.workspace_id,
        "version": agent.version,
        "created_at": agent.created_at,
        "updated_at": agent.updated_at,
    }


_OUT_JSON = TypeAdapter(AgentOut)
_PAGE_JSON = TypeAdapter(AgentPage)


def out_json(row: Row[Any]) -> bytes:
    """A read's body: ``AgentOut`` of a ``repository`` row, validated and serialized once,
    as FastAPI would serialize the model (``response_model``)."""
    return _OUT_JSON.dump_json(to_out(row, row.config))


def page_json(rows: list[Row[Any]], next_cursor: str | None) -> bytes:
    """A page's body: ``AgentPage`` of ``repository`` rows, validated in one call and
    serialized once."""
    items = [_out_fields(row, row.config) for row in rows]
    return _PAGE_JSON.dump_json(
        _PAGE_JSON.validate_python({"items": items, "next_cursor": next_cursor})
    )


async def _snapshot(session: AsyncSession, agent: Agent) -> dict[str, Any]:
    row = await session.get(AgentVersion, (agent.id, agent.version))
    assert row is not None
    return row.config


async def get_visible(
    session: AsyncSession, access: Access, agent_id: uuid.UUID, *, lock: bool = False
) -> Agent:
    """The agent if it exists, isn't deleted, and is of the caller's workspace (or the
    caller is a platform admin)."""
    query = select(Agent).where(Agent.id == agent_id, Agent.deleted_at.is_(None))
    if not access.is_platform_admin:
        query = query.where(Agent.workspace_id == access.workspace_id)
    if lock:
        query = query.with_for_update()
    agent = await session.scalar(query)
    if agent is None:
        raise AgentNotFound("No such agent.")
    return agent


async def create(
    session: AsyncSession, outbox: Outbox, access: Access, body: AgentCreate
) -> tuple[Agent, dict[str, Any]]:
    config = _config(body)
    await _check_provider(session, access.workspace_id, config)
    agent = Agent(
        owner_id=access.user_id,
        workspace_id=access.workspace_id,
        version=1,
        name=config["name"],
        tags=config["tags"],
    )
    session.add(agent)
    await session.flush()
    session.add(AgentVersion(agent_id=agent.id, version=1, config=config))
    await session.flush()
    await session.refresh(agent)
    await outbox.add(
        session,
        AgentCreated(
            agent_id=agent.id,
            owner_id=agent.owner_id,
            workspace_id=agent.workspace_id,
            agent_version=1,
            config=config,
        ),
    )
    return agent, config


async def _new_version(
    session: AsyncSession,
    outbox: Outbox,
    agent: Agent,
    config: dict[str, Any],
    restored_from: int | None = None,
) -> dict[str, Any]:
    agent.version += 1
    agent.name, agent.tags = config["name"], config["tags"]
    agent.updated_at = datetime.now(UTC)
    session.add(
        AgentVersion(
            agent_id=agent.id, version=agent.version, config=config, restored_from=restored_from
        )
    )
    await session.flush()
    await outbox.add(
        session,
        AgentUpdated(
            agent_id=agent.id,
            owner_id=agent.owner_id,
            workspace_id=agent.workspace_id,
            agent_version=agent.version,
            config=config,
        ),
    )
    return config


async def update(
    session: AsyncSession,
    outbox: Outbox,
    access: Access,
    agent_id: uuid.UUID,
    patch: AgentFields,
    if_match: str | None,
) -> tuple[Agent, dict[str, Any]]:
    # The row lock serializes writers of one agent: versions and events stay in order.
    agent = await get_visible(session, access, agent_id, lock=True)
    check_if_match(agent, if_match)
    config = _config(patch, await _snapshot(session, agent))
    await _check_provider(session, agent.workspace_id, config)
    return agent, await _new_version(session, outbox, agent, config)


async def restore(
    session: AsyncSession,
    outbox: Outbox,
    access: Access,
    agent_id: uuid.UUID,
    version: int,
    if_match: str | None,
) -> tuple[Agent, dict[str, Any]]:
    agent = await get_visible(session, access, agent_id, lock=True)
    check_if_match(agent, if_match)
    old = await session.get(AgentVersion, (agent.id, version))
    if old is None:
        raise NotFound(f"Agent {agent_id} has no version {version}.")
    config = _config(AgentFields(), old.config)
    await _check_provider(session, agent.workspace_id, config)
    return agent, await _new_version(session, outbox, agent, config, restored_from=version)


async def soft_delete(
    session: AsyncSession,
    outbox: Outbox,
    access: Access,
    agent_id: uuid.UUID,
    if_match: str | None,
) -> None:
    agent = await get_visible(session, access, agent_id, lock=True)
    check_if_match(agent, if_match)
    agent.deleted_at = datetime.now(UTC)
    agent.version += 1  # the deletion is the agent's newest state; readers order by it
    await session.flush()
    await outbox.add(
        session,
        AgentDeleted(
            agent_id=agent.id,
            owner_id=agent.owner_id,
            workspace_id=agent.workspace_id,
            agent_version=agent.version,
        ),
    )


# ---------------------------------------------------------------------- reads


async def current(connection: AsyncConnection, access: Access, agent_id: uuid.UUID) -> Row[Any]:
    """The agent with its current config, if live and of the caller's workspace (or the
    caller is a platform admin): one statement (``repository.current``)."""
    workspace = None if access.is_platform_admin else access.workspace_id
    row = await repository.current(connection, agent_id, workspace)
    if row is None:
        raise AgentNotFound("No such agent.")
    return row


async def list_agents(
    connection: AsyncConnection,
    access: Access,
    *,
    tag: str | None,
    q: str | None,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    """One page of the workspace's agents, each row with its current config."""
    return await repository.page(
        connection, access.workspace_id, tag=tag, q=q, sort=sort, limit=limit, cursor=cursor
    )


async def versions(
    session: AsyncSession, agent: Agent, *, limit: int, cursor: str | None
) -> tuple[list[AgentVersion], str | None]:
    """One page of the agent's versions, newest first."""
    query = select(AgentVersion).where(AgentVersion.agent_id == agent.id)
    return await paginate(
        session, query, (AgentVersion.version,), limit=limit, cursor=cursor, descending=True
    )

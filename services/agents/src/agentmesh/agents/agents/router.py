from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from agentmesh.agents.agents import service
from agentmesh.agents.agents.models import AgentVersion
from agentmesh.agents.agents.schemas import (
    AgentCreate,
    AgentFields,
    AgentOut,
    AgentPage,
    Sort,
    VersionOut,
    VersionPage,
)
from agentmesh.agents.workspaces import FORBIDDEN, AgentsRead, AgentsWrite
from agentmesh.shared.db import ReadConnection, Session
from agentmesh.shared.deps import AppOutbox
from agentmesh.shared.errors import NotFound
from agentmesh.shared.pagination import CURSOR_RESPONSES, DEFAULT_LIMIT, Cursor, Limit

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], responses=FORBIDDEN)
IfMatch = Annotated[str | None, Header(description="An ETag from a read; 412 when stale")]
#: The reads answer their body serialized once (``service.out_json``, ``page_json``);
#: ``response_model`` still documents it.
JSON = "application/json"
NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such agent in your workspace"}
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentOut,
    responses={422: {"description": "Invalid field or unknown tool/provider/KB"}},
)
async def create_agent(
    body: AgentCreate,
    caller: AgentsWrite,
    response: Response,
    session: Session,
    outbox: AppOutbox,
) -> AgentOut:
    """Create an agent. With no ``provider_id`` it runs on the built-in offline provider
    (model ``offline``): ``{"name": "Keeper", "instructions": "...", "model": "offline"}``
    is a complete agent."""
    agent, config = await service.create(session, outbox, caller, body)
    response.headers["ETag"] = service.etag(agent)
    response.headers["Location"] = f"/api/v1/agents/{agent.id}"
    return service.to_out(agent, config)


@router.get("", response_model=AgentPage, responses=CURSOR_RESPONSES)
async def list_agents(
    caller: AgentsRead,
    connection: ReadConnection,
    tag: Annotated[str | None, Query(max_length=50)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
    sort: Sort = "-created_at",
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """The workspace's agents, newest first by default, one page at a time."""
    items, next_cursor = await service.list_agents(
        connection, caller, tag=tag, q=q, sort=sort, limit=limit, cursor=cursor
    )
    return Response(service.page_json(items, next_cursor), media_type=JSON)


@router.get("/{agent_id}", response_model=AgentOut, responses=NOT_YOURS)
async def get_agent(
    agent_id: uuid.UUID, caller: AgentsRead, connection: ReadConnection
) -> Response:
    """One agent's current config; the ``ETag`` names its version."""
    row = await service.current(connection, caller, agent_id)
    return Response(service.out_json(row), media_type=JSON, headers={"ETag": service.etag(row)})


@router.patch(
    "/{agent_id}",
    response_model=AgentOut,
    responses={**NOT_YOURS, 412: {"description": "If-Match is stale"}},
)
async def update_agent(
    agent_id: uuid.UUID,
    body: AgentFields,
    caller: AgentsWrite,
    response: Response,
    session: Session,
    outbox: AppOutbox,
    if_match: IfMatch = None,
) -> AgentOut:
    """Change some fields; every change is a new immutable version. Send ``If-Match``
    with the ETag you read to be told (412) when someone else changed it meanwhile."""
    agent, config = await service.update(session, outbox, caller, agent_id, body, if_match)
    response.headers["ETag"] = service.etag(agent)
    return service.to_out(agent, config)


@router.delete(
    "/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_YOURS, 412: {"description": "If-Match is stale"}},
)
async def delete_agent(
    agent_id: uuid.UUID,
    caller: AgentsWrite,
    session: Session,
    outbox: AppOutbox,
    if_match: IfMatch = None,
) -> None:
    """Delete an agent: it can no longer be chatted with (its history stays in chat)."""
    await service.soft_delete(session, outbox, caller, agent_id, if_match)


@router.get(
    "/{agent_id}/versions", response_model=VersionPage, responses={**NOT_YOURS, **CURSOR_RESPONSES}
)
async def list_versions(
    agent_id: uuid.UUID,
    caller: AgentsRead,
    session: Session,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> VersionPage:
    """Every version, newest first, one page at a time."""
    agent = await service.get_visible(session, caller, agent_id)
    rows, next_cursor = await service.versions(session, agent, limit=limit, cursor=cursor)
    items = [VersionOut.model_validate(v, from_attributes=True) for v in rows]
    return VersionPage(items=items, next_cursor=next_cursor)


@router.get("/{agent_id}/versions/{version}", response_model=VersionOut, responses=NOT_YOURS)
async def get_version(
    agent_id: uuid.UUID, version: int, caller: AgentsRead, session: Session
) -> VersionOut:
    """One version's config."""
    agent = await service.get_visible(session, caller, agent_id)
    row = await session.get(AgentVersion, (agent.id, version))
    if row is None:
        raise NotFound(f"Agent {agent_id} has no version {version}.")
    return VersionOut.model_validate(row, from_attributes=True)


@router.post(
    "/{agent_id}/versions/{version}/restore",
    response_model=AgentOut,
    responses={**NOT_YOURS, 412: {"description": "If-Match is stale"}},
)
async def restore_version(
    agent_id: uuid.UUID,
    version: int,
    caller: AgentsWrite,
    response: Response,
    session: Session,
    outbox: AppOutbox,
    if_match: IfMatch = None,
) -> AgentOut:
    """Make an old version current again, as a new version."""
    agent, config = await service.restore(session, outbox, caller, agent_id, version, if_match)
    response.headers["ETag"] = service.etag(agent)
    return service.to_out(agent, config)

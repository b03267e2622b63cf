"""The agents domain's read queries: an agent with its current config in one statement.

Reads return Core rows (``id``, ``owner_id``, ``workspace_id``, ``version``, ``name``,
``created_at``, ``updated_at``, ``config``), not ORM objects: a read needs no identity map,
and joining the current version saves the second round trip per agent or page. The
statements are built once; a request only binds its values.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.agents.models import Agent, AgentVersion
from agentmesh.shared.pagination import paginate

#: An agent's row with its current version's config.
CURRENT = (
    select(
        Agent.id,
        Agent.owner_id,
        Agent.workspace_id,
        Agent.version,
        Agent.name,
        Agent.created_at,
        Agent.updated_at,
        AgentVersion.config,
    )
    .join(
        AgentVersion, and_(AgentVersion.agent_id == Agent.id, AgentVersion.version == Agent.version)
    )
    .where(Agent.deleted_at.is_(None))
)
_ONE = CURRENT.where(Agent.id == bindparam("agent_id"))
_ONE_IN_WORKSPACE = _ONE.where(Agent.workspace_id == bindparam("workspace_id"))
SORT_COLUMNS = {"created_at": Agent.created_at, "updated_at": Agent.updated_at}


async def current(
    session: AsyncSession, agent_id: uuid.UUID, workspace_id: uuid.UUID | None
) -> Row[Any] | None:
    """The live agent ``agent_id`` with its config, within ``workspace_id`` (None: any)."""
    if workspace_id is None:
        result = await session.execute(_ONE, {"agent_id": agent_id})
    else:
        result = await session.execute(
            _ONE_IN_WORKSPACE, {"agent_id": agent_id, "workspace_id": workspace_id}
        )
    return result.first()


async def page(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    tag: str | None,
    q: str | None,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    """One page of the workspace's live agents with their configs."""
    column = SORT_COLUMNS[sort.lstrip("-")]
    query: Select[Any] = CURRENT.where(Agent.workspace_id == workspace_id)
    if tag:
        query = query.where(Agent.tags.contains([tag]))
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Agent.name.ilike(f"%{escaped}%", escape="\\"))
    return await paginate(
        session,
        query,
        (column, Agent.id),
        limit=limit,
        cursor=cursor,
        descending=sort.startswith("-"),
        rows=True,
    )

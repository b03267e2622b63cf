"""The agents domain's read queries: an agent with its current config in one statement.

Reads return Core rows (``id``, ``owner_id``, ``workspace_id``, ``version``, ``name``,
``created_at``, ``updated_at``, ``config``), not ORM objects: a read needs no identity map,
and joining the current version saves the second round trip per agent or page. The
statements are built once; a request only binds its values. They run on a read-only
request's autocommit connection (``shared.db.ReadConnection``): one statement, no
transaction around it.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, select, tuple_
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from agentmesh.agents.agents.models import Agent, AgentVersion
from agentmesh.shared.pagination import decode_cursor, encode_cursor

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


class Compiled:
    """A Core select compiled to asyncpg's SQL once (at import; a page's filters on first
    use): a request passes its values to the driver (``exec_driver_sql``) and skips the
    statement's cache key and compiled-cache lookup. Its rows carry the driver's values,
    which are what the statement's own types would give here (UUIDs, aware datetimes, the
    jsonb decoded by the engine's codec)."""

    def __init__(self, statement: Select[Any]) -> None:
        compiled = statement.compile(dialect=asyncpg.dialect())
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())

    async def rows(self, connection: AsyncConnection, **values: Any) -> list[Row[Any]]:
        result = await connection.exec_driver_sql(self.sql, tuple(values[n] for n in self.names))
        return list(result.all())


_ONE = Compiled(CURRENT.where(Agent.id == bindparam("agent_id")))
_ONE_IN_WORKSPACE = Compiled(
    CURRENT.where(
        Agent.id == bindparam("agent_id"), Agent.workspace_id == bindparam("workspace_id")
    )
)
SORT_COLUMNS = {"created_at": Agent.created_at, "updated_at": Agent.updated_at}


async def current(
    connection: AsyncConnection, agent_id: uuid.UUID, workspace_id: uuid.UUID | None
) -> Row[Any] | None:
    """The live agent ``agent_id`` with its config, within ``workspace_id`` (None: any)."""
    if workspace_id is None:
        rows = await _ONE.rows(connection, agent_id=agent_id)
    else:
        rows = await _ONE_IN_WORKSPACE.rows(
            connection, agent_id=agent_id, workspace_id=workspace_id
        )
    return rows[0] if rows else None


async def page(
    connection: AsyncConnection,
    workspace_id: uuid.UUID,
    *,
    tag: str | None,
    q: str | None,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    """One page of the workspace's live agents with their configs: ``shared.pagination``'s
    keyset pages and cursors, the statement compiled once per combination of filters."""
    columns = (SORT_COLUMNS[sort.lstrip("-")], Agent.id)
    values: dict[str, Any] = {"workspace_id": workspace_id, "limit": limit + 1}
    if tag:
        values["tags"] = [tag]
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        values["name"] = f"%{escaped}%"
    if cursor:
        values["after"], values["after_id"] = decode_cursor(cursor, columns)
    found = await _page(sort, bool(tag), bool(q), bool(cursor)).rows(connection, **values)
    page = found[:limit]
    if len(found) <= limit:
        return page, None
    return page, encode_cursor([getattr(page[-1], column.key) for column in columns])


@functools.cache
def _page(sort: str, tag: bool, q: bool, after: bool) -> Compiled:
    """``page``'s statement with these filters, ordered by ``sort`` then id."""
    column = SORT_COLUMNS[sort.lstrip("-")]
    descending = sort.startswith("-")
    query = CURRENT.where(Agent.workspace_id == bindparam("workspace_id"))
    if tag:
        query = query.where(Agent.tags.contains(bindparam("tags", type_=Agent.tags.type)))
    if q:
        query = query.where(Agent.name.ilike(bindparam("name", type_=Agent.name.type), escape="\\"))
    if after:
        key = tuple_(column, Agent.id)
        last = tuple_(
            bindparam("after", type_=column.type), bindparam("after_id", type_=Agent.id.type)
        )
        query = query.where(key < last if descending else key > last)
    if descending:
        query = query.order_by(column.desc(), Agent.id.desc())
    else:
        query = query.order_by(column.asc(), Agent.id.asc())
    return Compiled(query.limit(bindparam("limit")))

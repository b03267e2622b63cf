"""The OpenAI-compatible API's SQL: the caller's agents (the models), each with whether a
budget applies to the caller's runs there, in one statement.

Built once, as Core: on ``/v1/chat/completions`` this read is on the path before the model
call, where building the ORM statement per request and the ORM's loading were most of the
read's CPU (a timeline of one request, ``bench.model_path``). Whether a budget applies is
the conversations' rule (``budget_applies``), not a copy of it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentmesh.chat.conversations.repository import budget_applies
from agentmesh.chat.models import AgentSnapshot
from agentmesh.shared.access import Access

_TABLE = AgentSnapshot.__table__
_COLUMNS = tuple(_TABLE.c)


def _agents(*, one: bool) -> Select:
    query = (
        select(
            *_COLUMNS,
            budget_applies(bindparam("workspace_id"), bindparam("user_id")).label("has_budget"),
        )
        .where(_TABLE.c.workspace_id == bindparam("workspace_id"), ~_TABLE.c.deleted)
        .order_by(_TABLE.c.agent_id)
    )
    return query.where(_TABLE.c.agent_id == bindparam("agent_id")) if one else query


ALL_AGENTS = _agents(one=False)
ONE_AGENT = _agents(one=True)


async def caller_agents(
    db: AsyncSession | AsyncConnection, caller: Access, agent_id: uuid.UUID | None = None
) -> list[tuple[AgentSnapshot, bool]]:
    """The live agents of the caller's workspace (or only ``agent_id`` of them), oldest
    id first, each with whether a budget applies to the caller's runs there. The snapshots
    are detached copies, to read (nothing is written back through them)."""
    params = {"workspace_id": caller.workspace_id, "user_id": caller.user_id}
    if agent_id is not None:
        params["agent_id"] = agent_id
    rows = await db.execute(ALL_AGENTS if agent_id is None else ONE_AGENT, params)
    keys = [column.key for column in _COLUMNS]
    return [
        (AgentSnapshot(**dict(zip(keys, row[:-1], strict=True))), bool(row[-1])) for row in rows
    ]

"""The OpenAI-compatible API's SQL: the caller's agents (the models), each with whether a
budget applies to the caller's runs there, in one statement.

Hand-written and built once: on ``/v1/chat/completions`` this read is on the path before
the model call, where building the ORM statement, its cache key and the ORM's loading
were most of the read's CPU (a timeline of one request, ``bench.model_path``).
"""

from __future__ import annotations

import uuid

from sqlalchemy import TextualSelect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentmesh.chat.models import WHOLE_WORKSPACE, AgentSnapshot
from agentmesh.shared.access import Access

_COLUMNS = tuple(AgentSnapshot.__table__.c)
_AGENTS = """
SELECT {columns},
       EXISTS (SELECT 1 FROM chat.budgets b
               WHERE b.workspace_id = :workspace_id AND b.user_id IN (:user_id, :whole))
         AS has_budget
FROM chat.agent_snapshots
WHERE workspace_id = :workspace_id AND NOT deleted{only}
ORDER BY agent_id
"""


def _agents(only: str) -> TextualSelect:
    sql = _AGENTS.format(columns=", ".join(c.name for c in _COLUMNS), only=only)
    return text(sql).columns(*_COLUMNS)  # typed: config as JSONB, updated_at as a datetime


ALL_AGENTS = _agents("")
ONE_AGENT = _agents(" AND agent_id = :agent_id")


async def caller_agents(
    db: AsyncSession | AsyncConnection, caller: Access, agent_id: uuid.UUID | None = None
) -> list[tuple[AgentSnapshot, bool]]:
    """The live agents of the caller's workspace (or only ``agent_id`` of them), oldest
    id first, each with whether a budget applies to the caller's runs there. The snapshots
    are detached copies, to read (nothing is written back through them)."""
    params = {"workspace_id": caller.workspace_id, "user_id": caller.user_id}
    params["whole"] = WHOLE_WORKSPACE
    if agent_id is not None:
        params["agent_id"] = agent_id
    rows = await db.execute(ALL_AGENTS if agent_id is None else ONE_AGENT, params)
    keys = [column.key for column in _COLUMNS]
    return [
        (AgentSnapshot(**dict(zip(keys, row[:-1], strict=True))), bool(row[-1])) for row in rows
    ]

"""The Responses API's queries over ``chat.responses``: a stored response, the chain a
``previous_response_id`` continues, its first row, its end, and forgetting it.

The statements are built once; a call only binds its values.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, RowMapping, delete, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.responses.tables import StoredResponse

#: A response and the ones it continues (at most 500), oldest first, in one workspace.
_CHAIN = text("""
WITH RECURSIVE chain AS (
  SELECT r.*, 1 AS depth FROM chat.responses r
  WHERE r.id = :id AND r.workspace_id = :workspace_id
  UNION ALL
  SELECT r.*, c.depth + 1 FROM chat.responses r JOIN chain c ON r.id = c.previous_response_id
  WHERE r.workspace_id = :workspace_id AND c.depth < 500)
SELECT id, status, input_items, output FROM chain ORDER BY depth DESC
""")
#: A response of a workspace with its run's status (``run_status``).
_GET = text("""
SELECT r.*, runs.status AS run_status FROM chat.responses r
LEFT JOIN chat.runs runs ON runs.id = r.id
WHERE r.id = :id AND r.workspace_id = :workspace_id
""")
_QUEUED_TO_RUNNING = text("""
UPDATE chat.responses SET status = 'in_progress' WHERE id = :id AND status = 'queued'
""")
#: A response's first row (a row already there, written by its end, stays).
_INSERT = insert(StoredResponse).on_conflict_do_nothing()
_END_COLUMNS = (
    "status",
    "output",
    "usage",
    "error",
    "incomplete_details",
    "completed_at",
    "params",
)
_upsert = insert(StoredResponse)
#: A response's end: its row, or what of it the run changed when the row is there.
_UPSERT_END = _upsert.on_conflict_do_update(
    index_elements=[StoredResponse.id],
    set_={name: _upsert.excluded[name] for name in _END_COLUMNS},
)


async def chain(
    session: AsyncSession, run_id: uuid.UUID, workspace_id: uuid.UUID
) -> list[Row[Any]]:
    """``run_id``'s response and those it continues, oldest first: ``id``, ``status``,
    ``input_items``, ``output`` (none: no such response in the workspace)."""
    return list(await session.execute(_CHAIN, {"id": run_id, "workspace_id": workspace_id}))


async def get(
    session: AsyncSession, run_id: uuid.UUID, workspace_id: uuid.UUID
) -> RowMapping | None:
    """The stored response ``run_id`` of the workspace, with ``run_status``, or None."""
    result = await session.execute(_GET, {"id": run_id, "workspace_id": workspace_id})
    return result.mappings().first()


async def insert_new(session: AsyncSession, row: dict[str, Any]) -> None:
    """Write a response's first row (nothing when it is there already)."""
    await session.execute(_INSERT, row)


async def upsert_end(session: AsyncSession, row: dict[str, Any]) -> None:
    """Write a response's end (the whole row when its first was never written)."""
    await session.execute(_UPSERT_END, row)


async def mark_in_progress(session: AsyncSession, run_id: uuid.UUID) -> None:
    """A queued (background) response is in progress."""
    await session.execute(_QUEUED_TO_RUNNING, {"id": run_id})


async def forget(session: AsyncSession, run_id: uuid.UUID) -> None:
    """Delete the stored response ``run_id`` (its run stays)."""
    await session.execute(delete(StoredResponse).where(StoredResponse.id == run_id))

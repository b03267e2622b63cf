"""The agent read-model: ``agents.agent.*`` into ``agent_snapshots``, newest version wins.

Events of one agent arrive in order, but a redelivery or a replay may bring an older one:
an upsert only moves a snapshot forward (``version`` greater than stored), and a delete
marks the snapshot deleted at its version, so a late update can't bring it back.
The agent's workspace comes with the event (version 2); a version 1 event means the
owner's personal workspace.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.models import AgentSnapshot
from agentmesh.shared.db import rowcount
from agentmesh.shared.events.contracts import (
    AgentCreated,
    AgentDeleted,
    AgentUpdated,
    personal_workspace,
)
from agentmesh.shared.events.envelope import Envelope, EventPayload

logger = logging.getLogger("agentmesh.chat.snapshots")


async def on_agent_event(session: AsyncSession, envelope: Envelope, payload: EventPayload) -> None:
    if isinstance(payload, AgentCreated | AgentUpdated):
        values = {
            "agent_id": payload.agent_id,
            "owner_id": payload.owner_id,
            "workspace_id": payload.workspace_id or personal_workspace(payload.owner_id),
            "version": payload.agent_version,
            "config": payload.config.model_dump(mode="json"),
            "deleted": False,
        }
        newer = AgentSnapshot.version < payload.agent_version
    elif isinstance(payload, AgentDeleted):
        values = {
            "agent_id": payload.agent_id,
            "owner_id": payload.owner_id,
            "workspace_id": payload.workspace_id or personal_workspace(payload.owner_id),
            "version": payload.agent_version,
            "config": {},
            "deleted": True,
        }
        newer = AgentSnapshot.version <= payload.agent_version
    else:  # pragma: no cover - the subscription only carries agent events
        return
    statement = insert(AgentSnapshot).values(**values)
    columns = ("owner_id", "workspace_id", "version", "deleted")
    update: dict[str, Any] = {key: statement.excluded[key] for key in columns}
    if not values["deleted"]:
        update["config"] = statement.excluded.config
    update["updated_at"] = func.now()
    result = await session.execute(
        statement.on_conflict_do_update(
            index_elements=[AgentSnapshot.agent_id], set_=update, where=newer
        )
    )
    # One line per agent change (rare: people editing agents): which replica applied
    # which event, and whether it moved the snapshot forward or was older than it.
    logger.info(
        "agent event applied",
        extra={
            "event_id": str(envelope.id),
            "subject": envelope.type,
            "agent_id": str(payload.agent_id),
            "agent_version": payload.agent_version,
            "newest": rowcount(result) == 1,
        },
    )

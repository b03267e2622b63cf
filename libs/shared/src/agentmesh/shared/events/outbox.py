"""The transactional outbox: events commit with the state change that caused them."""

from __future__ import annotations

from opentelemetry import propagate
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.shared.context import REQUEST_ID_HEADER, current_request_id
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.tables import EventTables


class Outbox:
    """Adds events to a service's outbox inside the caller's transaction.

    Use it from a use case: ``await outbox.add(session, AgentUpdated(...))``. Nothing is
    published until the session commits; a rolled-back transaction publishes nothing.
    """

    def __init__(self, tables: EventTables, *, source: str) -> None:
        self.tables = tables
        self.source = source

    async def add(self, session: AsyncSession, payload: EventPayload) -> Envelope:
        """Record ``payload`` for publishing once ``session`` commits; returns its envelope."""
        envelope = Envelope.wrap(payload, source=self.source)
        await session.execute(insert(self.tables.outbox).values(**self._row(envelope)))
        return envelope

    def _row(self, envelope: Envelope) -> dict[str, object]:
        headers: dict[str, str] = {}
        # The request's trace context rides along, so the consumer's span joins its trace.
        propagate.inject(headers)
        request_id = current_request_id()
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        return {
            "event_id": envelope.id,
            "subject": envelope.type,
            "subject_id": envelope.subject_id,
            "envelope": envelope.model_dump(mode="json"),
            "headers": headers,
        }

"""Create the agents schema's outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

from agentmesh.agents.base import EVENT_TABLES
from agentmesh.shared.events.tables import create_event_tables, drop_event_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_event_tables(op.get_bind(), EVENT_TABLES)


def downgrade() -> None:
    drop_event_tables(op.get_bind(), EVENT_TABLES)

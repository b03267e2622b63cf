"""run heartbeats: the replica executing a run marks it alive; stale runs are swept

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True), schema="chat"
    )
    # Runs in flight during the upgrade get a heartbeat now: a replica that keeps running
    # them refreshes it, one that is gone lets the sweep fail them.
    op.execute("UPDATE chat.runs SET heartbeat_at = now() WHERE status = 'running'")
    op.create_index(
        "ix_runs_running_heartbeat",
        "runs",
        ["heartbeat_at"],
        unique=False,
        schema="chat",
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_running_heartbeat", table_name="runs", schema="chat")
    op.drop_column("runs", "heartbeat_at", schema="chat")

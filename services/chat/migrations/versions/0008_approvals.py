"""approvals: runs waiting for a person to approve a tool call, durably

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_pauses",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["chat.runs.id"],
            ondelete="CASCADE",
            name=op.f("fk_run_pauses_run_id_runs"),
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_pauses")),
        schema="chat",
    )
    op.create_index(op.f("ix_run_pauses_expires_at"), "run_pauses", ["expires_at"], schema="chat")


def downgrade() -> None:
    op.drop_index(op.f("ix_run_pauses_expires_at"), table_name="run_pauses", schema="chat")
    op.drop_table("run_pauses", schema="chat")

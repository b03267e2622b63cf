"""fallbacks: a run records which of its agent's fallback models answered

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null: the agent's own model answered (every run before this one).
    op.add_column("runs", sa.Column("fallback_index", sa.Integer(), nullable=True), schema="chat")


def downgrade() -> None:
    op.drop_column("runs", "fallback_index", schema="chat")

"""workspace purge: when agents and chat have deleted a deleted workspace's data

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "identity"


def upgrade() -> None:
    for column in ("agents_purged_at", "chat_purged_at"):
        op.add_column(
            "workspaces", sa.Column(column, sa.DateTime(timezone=True), nullable=True), schema=S
        )


def downgrade() -> None:
    for column in ("agents_purged_at", "chat_purged_at"):
        op.drop_column("workspaces", column, schema=S)

"""conversation variables and time zone: what an agent's instructions template may name

``variables`` (a string map) fills ``{{name}}``; ``timezone`` (an IANA name, null: UTC) is
where ``{{date}}`` and ``{{datetime}}`` are read. Existing conversations have neither.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "conversations",
        sa.Column(
            "variables", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        schema="chat",
    )
    op.add_column("conversations", sa.Column("timezone", sa.Text(), nullable=True), schema="chat")


def downgrade() -> None:
    op.drop_column("conversations", "timezone", schema="chat")
    op.drop_column("conversations", "variables", schema="chat")

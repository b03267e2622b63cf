"""provider api_version: the API version an azure_openai provider is called with

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 17:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("api_version", sa.Text(), nullable=True), schema="agents")


def downgrade() -> None:
    op.drop_column("providers", "api_version", schema="agents")

"""ingest jobs: leases, progress and embedding generations

Documents become durable ingest jobs: a worker claims one with a lease
(``lease_owner``, ``lease_expires_at``, renewed by a heartbeat while indexing) and shows
progress (``chunks_done`` / ``chunks_total``). Each knowledge base counts its embedding
generation; every re-index bumps it, and a chunk written under an older generation is
refused by a trigger, so a re-index during an ingest never leaves mixed vectors.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# FOR SHARE: a re-index (which updates the knowledge base row first) either commits before
# the check, which then sees the new generation, or waits until this insert commits and
# then replaces what it wrote. The refusal has its own SQLSTATE (P0420) so the worker
# tells it from other errors.
CHECK_FUNCTION = """
CREATE FUNCTION agents.chunks_check_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    stale uuid;
BEGIN
    SELECT n.knowledge_base_id INTO stale
    FROM new_rows n
    JOIN (
        SELECT k.id, k.embedding_generation
        FROM agents.knowledge_bases k
        WHERE k.id IN (SELECT DISTINCT knowledge_base_id FROM new_rows)
        ORDER BY k.id
        FOR SHARE
    ) kb ON kb.id = n.knowledge_base_id
    WHERE n.generation IS DISTINCT FROM kb.embedding_generation
    LIMIT 1;
    IF stale IS NOT NULL THEN
        RAISE EXCEPTION 'chunks of an older embedding generation of knowledge base %', stale
            USING ERRCODE = 'P0420';
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "knowledge_bases",
        sa.Column("embedding_generation", sa.Integer(), server_default="1", nullable=False),
        schema="agents",
    )
    op.add_column(
        "chunks",
        sa.Column("generation", sa.Integer(), server_default="1", nullable=False),
        schema="agents",
    )
    op.alter_column("chunks", "generation", server_default=None, schema="agents")
    for column in (
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("chunks_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("chunks_total", sa.Integer(), nullable=True),
    ):
        op.add_column("documents", column, schema="agents")
    # The claim query scans the waiting and running documents only.
    op.create_index(
        "ix_documents_queue",
        "documents",
        ["owner_id", "created_at"],
        schema="agents",
        postgresql_where=sa.text("status IN ('pending', 'indexing')"),
    )
    op.execute(CHECK_FUNCTION)
    op.execute(
        "CREATE TRIGGER chunks_check_generation AFTER INSERT ON agents.chunks"
        " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION agents.chunks_check_generation()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER chunks_check_generation ON agents.chunks")
    op.execute("DROP FUNCTION agents.chunks_check_generation()")
    op.drop_index("ix_documents_queue", table_name="documents", schema="agents")
    for column in ("chunks_total", "chunks_done", "lease_expires_at", "lease_owner"):
        op.drop_column("documents", column, schema="agents")
    op.drop_column("chunks", "generation", schema="agents")
    op.drop_column("knowledge_bases", "embedding_generation", schema="agents")

"""kb lexemes: per knowledge base, how many chunks hold each lexeme

Keyword search reads these document frequencies to rank only the chunks that hold the
query's rarer words (see agentmesh.agents.knowledge.search). Statement-level triggers on
agents.chunks keep the counts exact on every path that writes chunks (ingest, re-index,
document and knowledge base deletes, erasure) without those paths knowing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One function for the three triggers; plpgsql only plans the branch that runs, so each
# branch may name the transition table only its own trigger declares.
# - The per-knowledge-base advisory lock (class 0x6b6c) serializes the writers of one
#   knowledge base before they touch its count rows: a re-index deletes then inserts
#   chunks in one transaction, two statements whose row locks could otherwise interleave
#   with a concurrent upload's and deadlock. Writers of one knowledge base contend on the
#   rows of its common lexemes anyway, so the lock costs no concurrency.
# - Rows are written in (knowledge_base_id, lexeme) order, and locked in that order
#   before a subtraction, so writers that do meet lock rows in the same order.
COUNT_FUNCTION = """
CREATE FUNCTION agents.kb_lexemes_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_advisory_xact_lock(27500, hashtext(kb::text))
        FROM (SELECT DISTINCT knowledge_base_id AS kb FROM new_rows ORDER BY 1) kbs;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM pg_advisory_xact_lock(27500, hashtext(kb::text))
        FROM (SELECT DISTINCT knowledge_base_id AS kb FROM old_rows ORDER BY 1) kbs;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO agents.kb_lexemes AS s (knowledge_base_id, lexeme, chunks)
        SELECT n.knowledge_base_id, l.lexeme, count(*)
        FROM new_rows n, unnest(tsvector_to_array(n.tsv)) l(lexeme)
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (knowledge_base_id, lexeme) DO UPDATE SET chunks = s.chunks + excluded.chunks;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        WITH gone AS (
            SELECT o.knowledge_base_id, l.lexeme, count(*)::int AS chunks
            FROM old_rows o, unnest(tsvector_to_array(o.tsv)) l(lexeme)
            GROUP BY 1, 2
        ), locked AS MATERIALIZED (
            SELECT s.knowledge_base_id, s.lexeme, g.chunks
            FROM agents.kb_lexemes s JOIN gone g USING (knowledge_base_id, lexeme)
            ORDER BY 1, 2
            FOR UPDATE OF s
        )
        UPDATE agents.kb_lexemes s SET chunks = s.chunks - locked.chunks
        FROM locked
        WHERE s.knowledge_base_id = locked.knowledge_base_id AND s.lexeme = locked.lexeme;
        DELETE FROM agents.kb_lexemes s
        USING (
            SELECT DISTINCT o.knowledge_base_id, l.lexeme
            FROM old_rows o, unnest(tsvector_to_array(o.tsv)) l(lexeme)
        ) touched
        WHERE s.knowledge_base_id = touched.knowledge_base_id AND s.lexeme = touched.lexeme
          AND s.chunks <= 0;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "kb_lexemes",
        sa.Column("knowledge_base_id", sa.Uuid(), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["knowledge_base_id"],
            ["agents.knowledge_bases.id"],
            name=op.f("fk_kb_lexemes_knowledge_base_id_knowledge_bases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("knowledge_base_id", "lexeme", name=op.f("pk_kb_lexemes")),
        schema="agents",
    )
    op.execute(COUNT_FUNCTION)
    for event, table in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ):
        op.execute(
            f"CREATE TRIGGER kb_lexemes_on_{event.lower()} AFTER {event} ON agents.chunks"
            f" REFERENCING {table} FOR EACH STATEMENT EXECUTE FUNCTION agents.kb_lexemes_count()"
        )
    # Backfill; chunks written from here on are counted by the triggers (same transaction).
    op.execute("""
        INSERT INTO agents.kb_lexemes (knowledge_base_id, lexeme, chunks)
        SELECT c.knowledge_base_id, l.lexeme, count(*)
        FROM agents.chunks c, unnest(tsvector_to_array(c.tsv)) l(lexeme)
        WHERE c.knowledge_base_id IN (SELECT id FROM agents.knowledge_bases)
        GROUP BY 1, 2
    """)


def downgrade() -> None:
    for event in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER kb_lexemes_on_{event} ON agents.chunks")
    op.execute("DROP FUNCTION agents.kb_lexemes_count()")
    op.drop_table("kb_lexemes", schema="agents")

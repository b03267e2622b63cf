"""The knowledge domain's hand-written SQL, in one place: the search's statements (vector,
keyword, their settings), the ingest queue's claim and the queue count.

The ORM and Core statements of the routes, the service and the jobs stay beside their
use; what is written as SQL text is here. Its SQL is assembled from this module's constants
only; what users type is a bind parameter.
"""

# ruff: noqa: S608

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from agentmesh.agents.knowledge.search import KeywordPlan

# ---------------------------------------------------------------------- search

#: Any of the query's words, not all of them: "money back refund" finds a chunk about
#: refunds. ts_rank_cd still ranks chunks with more of the words higher.
ANY_WORD_QUERY = (
    "CAST(replace(CAST(plainto_tsquery('english', :text) AS text), '&', '|') AS tsquery)"
)
#: Custom plans: a prepared statement's generic plan knows neither the query vector nor
#: the LIMIT, and seq-scans and sorts every chunk instead of using an index. All three
#: settings in one round trip, the query words' frequencies too when the mode needs them.
SETTINGS = """SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
    set_config('hnsw.ef_search', :ef_search, true),
    set_config('hnsw.iterative_scan', 'relaxed_order', true),
    (SELECT coalesce(sum(chunk_count), 0) FROM agents.documents
     WHERE knowledge_base_id = :kb) AS chunks"""
FREQUENCIES = f""", CAST({ANY_WORD_QUERY} AS text) AS any_word, (
    SELECT json_object_agg(l.lexeme, coalesce(s.chunks, 0))
    FROM unnest(tsvector_to_array(to_tsvector('english', :text))) l(lexeme)
    LEFT JOIN agents.kb_lexemes s ON s.knowledge_base_id = :kb AND s.lexeme = l.lexeme
) AS frequencies"""
CHUNKS = "agents.chunks c JOIN agents.documents d ON d.id = c.document_id"
HIT = "c.id, c.document_id, d.filename, c.position, c.content, c.headings"
#: A metadata filter uses pgvector's iterative index scans, so a filtered vector search
#: still returns ``top_k`` when enough chunks match.
WHERE = "c.knowledge_base_id = :kb AND d.metadata @> CAST(:filter AS jsonb)"
#: Without a filter the always-true ``@>`` is left out: before ``documents`` is analyzed
#: (just after a bulk load) the planner takes it for a selective filter and scans every
#: chunk of the matching documents instead of using the index.
UNFILTERED = "c.knowledge_base_id = :kb"
RANK = "ts_rank_cd(c.tsv, CAST(:any_word AS tsquery))"


async def search_setup(session: AsyncSession, settings: dict[str, Any], *, words: bool) -> Row[Any]:
    """``SETTINGS`` for this transaction, with the knowledge base's chunk count and, when
    the mode ranks ``words``, the query's any-word tsquery and its words' frequencies."""
    return (await session.execute(text(SETTINGS + (FREQUENCIES if words else "")), settings)).one()


async def vector_hits(
    session: AsyncSession,
    vector: list[float],
    params: dict[str, Any],
    where: str,
    *,
    exact: bool,
) -> list[Any]:
    """The ``params["limit"]`` chunks nearest ``vector`` (cosine) among ``where``'s;
    ``exact``: every distance computed instead of the HNSW index."""
    # ``+ 0`` is not the index's ordering operator: the planner scans the knowledge
    # base's own chunks and sorts them, an exact search.
    order = "c.embedding <=> CAST(:q AS vector)"
    if exact:
        order = f"({order}) + 0"
    return list(
        await session.execute(
            text(f"""
            SELECT {HIT}, 1 - (c.embedding <=> CAST(:q AS vector)) AS score
            FROM {CHUNKS} WHERE {where}
            ORDER BY {order} LIMIT :limit"""),
            {**params, "q": str(vector)},
        )
    )


def tsquery_term(lexeme: str) -> str:
    """``lexeme`` as a quoted tsquery operand, matched as is (no stemming again)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def any_of(lexemes: list[str]) -> str:
    return " | ".join(map(tsquery_term, lexemes))


def all_of(lexemes: list[str]) -> str:
    return " & ".join(map(tsquery_term, lexemes))


async def keyword_hits(
    session: AsyncSession,
    plan: KeywordPlan,
    any_word: str,
    params: dict[str, Any],
    cap: int,
    where: str,
) -> list[Any]:
    """The best ``params["limit"]`` chunks by ``ts_rank_cd`` against ``any_word``, ranking at
    most ``cap`` chunks, chosen by ``plan`` (``search.plan_keyword``)."""
    if not plan.picked:
        return []  # none of the words is in this knowledge base
    # A word twice ranks as once (ts_rank_cd merges the operands at a position), cheaper.
    any_word = " | ".join(dict.fromkeys(any_word.split(" | ")))
    params = {**params, "any_word": any_word, "cap": cap}
    # Ranked by id and score only; the best few rows are read whole afterwards.
    ranked = f"SELECT c.id, {RANK} AS score, 0 AS tier FROM {CHUNKS} WHERE {where}"
    matches = f"{ranked} AND c.tsv @@ CAST(:any_word AS tsquery)"
    # The index looks up the rarer words only (their posting lists are short); whether a
    # chunk matches the whole query (a hyphenated word is a phrase of its parts) is
    # checked on its row: ``IS TRUE`` keeps the planner from asking the index.
    among = f"{ranked} AND (c.tsv @@ CAST(:any_word AS tsquery)) IS TRUE"
    if plan.degraded:  # up to ``cap`` chunks, those holding the most of the rarest first
        words = plan.picked + plan.others
        parts = []
        for i, count in enumerate(sorted({len(words), min(2, len(words)), 1}, reverse=True)):
            params[f"part{i}"] = all_of(words[:count])
            part = f"({among} AND c.tsv @@ CAST(:part{i} AS tsquery)"
            parts.append(part + (f" AND NOT c.tsv @@ CAST(:part{i - 1} AS tsquery))" if i else ")"))
        ranked = f"SELECT * FROM ({' UNION ALL '.join(parts)} LIMIT :cap) k"
    elif not plan.others:  # every word fits: the unpruned ranking
        ranked = matches
    else:
        params["picked"] = any_of(plan.picked)
        ranked = f"{among} AND c.tsv @@ CAST(:picked AS tsquery)"
        if plan.picked_chunks < params["limit"]:  # too few: fill with common words' chunks
            params["fill"] = cap - plan.picked_chunks
            ranked = f"""({ranked}) UNION ALL (SELECT id, score, 1 FROM (
                {matches} AND NOT c.tsv @@ CAST(:picked AS tsquery) LIMIT :fill) f)"""
    sql = f"""
        SELECT {HIT}, k.score FROM (
            SELECT * FROM ({ranked}) r ORDER BY tier, score DESC, id LIMIT :limit
        ) k JOIN agents.chunks c ON c.id = k.id JOIN agents.documents d ON d.id = c.document_id
        ORDER BY k.tier, k.score DESC, c.id"""
    return list(await session.execute(text(sql), params))


# ---------------------------------------------------------------------- ingest queue

CLAIM_LOCK = (27501, 0)  # pg_advisory_xact_lock key: one claim at a time, every replica

# Fair across owners: each owner's waiting documents are ranked oldest first, and a
# document's turn is its rank plus the owner's running jobs. Lower turns go first, so one
# owner's 200 uploads take one slot while the next owner's first upload takes the next.
# A turn over the per-user cap waits.
CLAIM = text("""
WITH running AS (
    SELECT owner_id, count(*) AS n FROM agents.documents
    WHERE status = 'indexing' AND lease_expires_at > now()
    GROUP BY owner_id
), waiting AS (
    SELECT d.id, d.owner_id, d.created_at,
           row_number() OVER (PARTITION BY d.owner_id ORDER BY d.created_at, d.id) AS rank
    FROM agents.documents d
    WHERE d.status = 'pending'
       OR (d.status = 'indexing' AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= now()))
), fair AS (
    SELECT w.id, w.rank + coalesce(r.n, 0) AS turn, w.created_at
    FROM waiting w LEFT JOIN running r USING (owner_id)
    WHERE w.rank + coalesce(r.n, 0) <= :per_user
), picked AS (
    SELECT d.id FROM agents.documents d JOIN fair f USING (id)
    ORDER BY f.turn, f.created_at, d.id
    LIMIT :slots
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE agents.documents d
SET status = 'indexing', lease_owner = :worker,
    lease_expires_at = now() + make_interval(secs => :lease),
    error = NULL, chunks_done = 0, chunks_total = NULL, updated_at = now()
FROM picked WHERE d.id = picked.id
RETURNING d.id
""")
#: The new end of a lease, ``:lease`` seconds from now (a column value in an UPDATE).
LEASE_FROM_NOW = text("now() + make_interval(secs => :lease)")
#: The database's time (a column value in an UPDATE).
NOW = text("now()")


async def claim_ids(
    session: AsyncSession, worker: str, *, slots: int, per_user: int, lease_seconds: float
) -> list[uuid.UUID]:
    """``CLAIM`` in ``session``'s transaction, serialized across replicas by ``CLAIM_LOCK``:
    the ids of up to ``slots`` documents now leased to ``worker``."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": CLAIM_LOCK[0], "b": CLAIM_LOCK[1]}
    )
    params = {"worker": worker, "slots": slots, "per_user": per_user, "lease": lease_seconds}
    return list(await session.scalars(CLAIM, params))


#: Served by ``ix_documents_queue`` (status pending or indexing).
COUNT_QUEUED = text("SELECT count(*) FROM agents.documents WHERE status = 'pending'")


async def count_queued(session: AsyncSession) -> int:
    """Documents waiting for a worker, every replica's."""
    return await session.scalar(COUNT_QUEUED) or 0

"""Knowledge search: ``vector`` (HNSW), ``keyword`` (full text) and ``hybrid`` (both, fused).

Keyword search matches any of the query's words, so a query of common words matches a
large part of a knowledge base, and ranking a match (``ts_rank_cd``, its row read) costs
2-8 us (row cached or not) plus 0.5 us a query word: 140 ms for 40k matches. So it ranks
candidates only, chosen MaxScore-style with the knowledge base's word frequencies
(``agents.kb_lexemes``, kept by triggers):

- the rarest words are picked, in ascending frequency, while the chunks holding them add
  up to at most ``cap`` (the rarest word is always picked); candidates are the chunks
  holding a picked word, ranked against the whole any-word query, so the common words
  still order them. When all the words fit, that is exactly the unpruned ranking.
- when the candidates may be fewer than the results wanted, chunks holding only common
  words fill the rest (``cap`` chunks ranked in all), ranked after the candidates.
- degraded, when even the rarest word is in more than ``cap`` chunks: the candidates are
  the first ``cap`` chunks holding every word, then the two rarest, then the rarest, each
  part in table order. The cost stays bounded; which of the many matches of the last part
  are ranked is arbitrary.
"""

# SQL is assembled from this module's constants only; what users type is a bind parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.knowledge.embedding import embed_query as embed_with_errors
from agentmesh.agents.knowledge.models import KnowledgeBase
from agentmesh.agents.knowledge.schemas import SearchHit
from agentmesh.agents.settings import AgentsSettings

RRF_K = 60
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
#: A knowledge base with fewer chunks than this is searched exactly (its chunks through the
#: ``knowledge_base_id`` index, every distance computed), not through the HNSW index that
#: all knowledge bases share: filtered to a small knowledge base among many, the graph
#: walk visits mostly other tenants' chunks before it finds ten of this one, and loses
#: recall. Measured in ``bench.knowledge_tenants`` (one knowledge base among 1,000).
EXACT_SCAN_BELOW = 10_000
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
KEYWORD_CANDIDATE_CAP: int = AgentsSettings.model_fields["keyword_candidate_cap"].default


def tsquery_term(lexeme: str) -> str:
    """``lexeme`` as a quoted tsquery operand, matched as is (no stemming again)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def any_of(lexemes: list[str]) -> str:
    return " | ".join(map(tsquery_term, lexemes))


def all_of(lexemes: list[str]) -> str:
    return " & ".join(map(tsquery_term, lexemes))


@dataclass(frozen=True)
class KeywordPlan:
    """Which chunks the keyword search ranks; see the module's docstring."""

    picked: list[str]  # the rarest words, by ascending frequency
    others: list[str]  # the other words found in the knowledge base
    picked_chunks: int  # chunks holding a picked word, at most (sum of frequencies)
    degraded: bool  # even the rarest word is in more than ``cap`` chunks


def plan_keyword(frequencies: dict[str, int], cap: int) -> KeywordPlan:
    """Pick the rarest words while the chunks holding them add up to at most ``cap``."""
    ranked = sorted((df, lexeme) for lexeme, df in frequencies.items() if df > 0)
    picked: list[str] = []
    total = 0
    for df, lexeme in ranked:
        if picked and total + df > cap:
            break
        picked.append(lexeme)
        total += df
    others = [lexeme for _, lexeme in ranked[len(picked) :]]
    return KeywordPlan(picked, others, total, degraded=total > cap)


async def embed_query(model: Any, query: str, mode: str) -> list[float] | None:
    """The query's vector for ``search`` (None for ``keyword``). A remote model is a network
    call: make it while no session holds a connection."""
    if mode not in ("vector", "hybrid"):
        return None
    return list(await embed_with_errors(model, query))  # a remote failure: EmbeddingUnreachable


async def search(
    session: AsyncSession,
    vector: list[float] | None,
    kb: KnowledgeBase,
    *,
    query: str,
    top_k: int,
    mode: str,
    filter: dict[str, Any],
    ef_search: int,
    keyword_candidate_cap: int = KEYWORD_CANDIDATE_CAP,
    exact_below: int = EXACT_SCAN_BELOW,
) -> list[SearchHit]:
    """``vector`` (HNSW, cosine), ``keyword`` (Postgres full text, any of the words) or
    ``hybrid`` (reciprocal rank fusion of both); ``vector`` is ``embed_query``'s."""
    pool = top_k if mode != "hybrid" else top_k * 4
    params: dict[str, Any] = {"kb": kb.id, "limit": pool}
    where = UNFILTERED
    if filter:
        params["filter"], where = json.dumps(filter), WHERE
    if vector is None and mode in ("vector", "hybrid"):
        raise ValueError(f"a {mode} search needs the query's vector")
    settings = {"ef_search": str(int(ef_search)), "text": query, "kb": kb.id}
    words = mode in ("keyword", "hybrid")
    setup = (await session.execute(text(SETTINGS + (FREQUENCIES if words else "")), settings)).one()
    vector_hits: list[Any] = []
    keyword_hits: list[Any] = []
    if mode in ("vector", "hybrid"):
        # ``+ 0`` is not the index's ordering operator: the planner scans the knowledge
        # base's own chunks and sorts them, an exact search.
        order = "c.embedding <=> CAST(:q AS vector)"
        if setup.chunks < exact_below:
            order = f"({order}) + 0"
        vector_hits = list(
            await session.execute(
                text(f"""
            SELECT {HIT}, 1 - (c.embedding <=> CAST(:q AS vector)) AS score
            FROM {CHUNKS} WHERE {where}
            ORDER BY {order} LIMIT :limit"""),
                {**params, "q": str(vector)},
            )
        )
    if words:
        plan = plan_keyword(setup.frequencies or {}, keyword_candidate_cap)
        keyword_hits = await keyword(
            session, plan, setup.any_word, params, keyword_candidate_cap, where
        )
    if mode == "vector":
        ranked = [(row, float(row.score)) for row in vector_hits]
    elif mode == "keyword":
        ranked = [(row, float(row.score)) for row in keyword_hits]
    else:
        fused: dict[int, tuple[Any, float]] = {}
        for hits in (vector_hits, keyword_hits):
            for rank, row in enumerate(hits):
                previous = fused.get(row.id, (row, 0.0))[1]
                fused[row.id] = (row, previous + 1.0 / (RRF_K + rank + 1))
        ranked = sorted(fused.values(), key=lambda item: -item[1])
    return [
        SearchHit(
            chunk_id=row.id,
            document_id=row.document_id,
            filename=row.filename,
            position=row.position,
            content=row.content,
            headings=row.headings,
            score=round(score, 6),
        )
        for row, score in ranked[:top_k]
    ]


async def keyword(
    session: AsyncSession,
    plan: KeywordPlan,
    any_word: str,
    params: dict[str, Any],
    cap: int,
    where: str,
) -> list[Any]:
    """The best ``params["limit"]`` chunks by ``ts_rank_cd`` against ``any_word``, ranking at
    most ``cap`` chunks, chosen by ``plan``."""
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

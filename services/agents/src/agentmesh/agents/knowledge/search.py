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

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.knowledge import repository
from agentmesh.agents.knowledge.embedding import embed_query as embed_with_errors
from agentmesh.agents.knowledge.models import KnowledgeBase
from agentmesh.agents.knowledge.schemas import SearchHit
from agentmesh.agents.settings import AgentsSettings

RRF_K = 60
#: A knowledge base with fewer chunks than this is searched exactly (its chunks through the
#: ``knowledge_base_id`` index, every distance computed), not through the HNSW index that
#: all knowledge bases share: filtered to a small knowledge base among many, the graph
#: walk visits mostly other tenants' chunks before it finds ten of this one, and loses
#: recall. Measured in ``bench.knowledge_tenants`` (one knowledge base among 1,000).
EXACT_SCAN_BELOW = 10_000
KEYWORD_CANDIDATE_CAP: int = AgentsSettings.model_fields["keyword_candidate_cap"].default


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
    where = repository.UNFILTERED
    if filter:
        params["filter"], where = json.dumps(filter), repository.WHERE
    if vector is None and mode in ("vector", "hybrid"):
        raise ValueError(f"a {mode} search needs the query's vector")
    settings = {"ef_search": str(int(ef_search)), "text": query, "kb": kb.id}
    words = mode in ("keyword", "hybrid")
    setup = await repository.search_setup(session, settings, words=words)
    vector_hits: list[Any] = []
    keyword_hits: list[Any] = []
    if mode in ("vector", "hybrid"):
        assert vector is not None
        vector_hits = await repository.vector_hits(
            session, vector, params, where, exact=setup.chunks < exact_below
        )
    if words:
        plan = plan_keyword(setup.frequencies or {}, keyword_candidate_cap)
        keyword_hits = await repository.keyword_hits(
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

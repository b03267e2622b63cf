"""Keyword search at scale: per-knowledge-base word counts kept by triggers, candidate
pruning by those counts, and custom plans on a long-lived connection."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.knowledge import service
from agentmesh.agents.knowledge.models import KnowledgeBase
from agentmesh.agents.knowledge.repository import all_of, any_of, tsquery_term
from agentmesh.agents.knowledge.search import plan_keyword

KBS = "/api/v1/knowledge-bases"
#: Each paragraph is one chunk at chunk_size 200 (two never fit in one).
COMMON = (
    "Paragraph {i}: the roadmap for budget planning and hiring is reviewed every quarter "
    "by the team leads, with hiring and budget first on the agenda of that quarter."
)
RARE = "The zeppelin hangar got its budget."
#: What keyword search ranked before pruning: every chunk holding any of the words.
UNPRUNED = """
    SELECT c.id, ts_rank_cd(c.tsv, q.any_word) AS score
    FROM agents.chunks c JOIN agents.documents d ON d.id = c.document_id,
         CAST(replace(CAST(plainto_tsquery('english', :text) AS text), '&', '|') AS tsquery)
         AS q(any_word)
    WHERE c.knowledge_base_id = :kb AND d.metadata @> CAST(:filter AS jsonb)
      AND c.tsv @@ q.any_word
    ORDER BY score DESC, c.id LIMIT :limit"""
COUNTS = "SELECT lexeme, chunks FROM agents.kb_lexemes WHERE knowledge_base_id = :kb"
RECOUNT = """
    SELECT l.lexeme, count(*) FROM agents.chunks c, unnest(tsvector_to_array(c.tsv)) l(lexeme)
    WHERE c.knowledge_base_id = :kb GROUP BY 1"""


async def indexed(agents, headers, kb_id, document_id) -> dict:
    for _ in range(300):
        url = f"{KBS}/{kb_id}/documents/{document_id}"
        document = (await agents.get(url, headers=headers)).json()
        if document["status"] in ("ready", "failed"):
            assert document["status"] == "ready", document
            return document
        await asyncio.sleep(0.1)
    raise AssertionError(f"document stuck in {document['status']}")


async def upload(agents, headers, kb_id, body: str, filename: str, **metadata) -> dict:
    response = await agents.post(
        f"{KBS}/{kb_id}/documents",
        json={"text": body, "filename": filename, "metadata": metadata},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return await indexed(agents, headers, kb_id, response.json()["id"])


async def create_kb(agents, headers, name: str = "Plans") -> str:
    body = {"name": name, "chunk_size": 200, "chunk_overlap": 20}
    created = await agents.post(KBS, json=body, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def counts_and_truth(session: AsyncSession, kb_id: str) -> tuple[dict, dict]:
    counts = dict((await session.execute(text(COUNTS), {"kb": kb_id})).all())
    truth = dict((await session.execute(text(RECOUNT), {"kb": kb_id})).all())
    return counts, truth


async def assert_exact(agents, kb_id: str) -> dict[str, int]:
    async with agents.app.state.sessionmaker() as session:
        counts, truth = await counts_and_truth(session, kb_id)
    assert counts == truth
    return counts


@pytest.fixture
async def plans(agents, token_issuer):
    """A knowledge base of 30 chunks of common words and one holding "zeppelin"."""
    headers = token_issuer.headers()
    kb_id = await create_kb(agents, headers)
    common = "\n\n".join(COMMON.format(i=i) for i in range(30))
    document = await upload(agents, headers, kb_id, common, "plans.txt", team="red")
    assert document["chunk_count"] == 30
    await upload(agents, headers, kb_id, RARE, "zeppelin.txt", team="blue")
    async with agents.app.state.sessionmaker() as session:
        kb = await session.get(KnowledgeBase, uuid.UUID(kb_id))
    return kb


async def keyword_search(agents, kb, query: str, *, cap: int, top_k: int = 10, **filter) -> list:
    async with agents.app.state.sessionmaker() as session, session.begin():
        return await service.search(
            session,
            None,
            kb,
            query=query,
            top_k=top_k,
            mode="keyword",
            filter=filter,
            ef_search=40,
            keyword_candidate_cap=cap,
        )


async def unpruned(agents, kb, query: str, *, top_k: int = 10, **filter) -> list[tuple]:
    async with agents.app.state.sessionmaker() as session:
        params = {"text": query, "kb": kb.id, "filter": json.dumps(filter), "limit": top_k}
        rows = await session.execute(text(UNPRUNED), params)
        return [(row.id, round(row.score, 6)) for row in rows]


async def test_word_counts_stay_exact_on_every_write_of_chunks(agents, token_issuer):
    headers = token_issuer.headers()
    kb_id, other_kb = await create_kb(agents, headers), await create_kb(agents, headers, "B")
    first = "\n\n".join(COMMON.format(i=i) for i in range(4))
    document = await upload(agents, headers, kb_id, first, "plans.txt")
    counts = await assert_exact(agents, kb_id)
    assert counts["budget"] == 4 and counts["paragraph"] == 4
    await upload(agents, headers, other_kb, first, "plans.txt")
    again = await agents.post(
        f"{KBS}/{kb_id}/documents", headers=headers, json={"text": first, "filename": "copy.txt"}
    )
    assert again.json()["duplicate"] is True
    assert await assert_exact(agents, kb_id) == counts
    second = await upload(agents, headers, kb_id, RARE, "zeppelin.txt")
    assert (await assert_exact(agents, kb_id))["budget"] == 5
    # Re-chunking deletes and re-inserts every chunk in one transaction per document.
    patched = await agents.patch(
        f"{KBS}/{kb_id}", headers=headers, json={"chunk_size": 120, "chunk_overlap": 0}
    )
    assert patched.status_code == 200
    for doc in (document, second):
        await indexed(agents, headers, kb_id, doc["id"])
    assert (await assert_exact(agents, kb_id))["zeppelin"] == 1
    # No service path updates chunks; the update trigger keeps a manual fix exact too.
    async with agents.app.state.sessionmaker() as session:
        await session.execute(
            text("UPDATE agents.chunks SET content = 'airship budget' WHERE document_id = :d"),
            {"d": second["id"]},
        )
        counts, truth = await counts_and_truth(session, kb_id)
        await session.rollback()
    assert counts == truth and "zeppelin" not in counts and counts["airship"] == 1
    url = f"{KBS}/{kb_id}/documents/{document['id']}"
    assert (await agents.delete(url, headers=headers)).status_code == 204
    counts = await assert_exact(agents, kb_id)
    assert "paragraph" not in counts and counts["zeppelin"] == 1
    other_counts = await assert_exact(agents, other_kb)
    assert other_counts["paragraph"] == 4
    assert (await agents.delete(f"{KBS}/{kb_id}", headers=headers)).status_code == 204
    assert await assert_exact(agents, kb_id) == {}
    assert await assert_exact(agents, other_kb) == other_counts


async def test_pruned_keyword_search_equals_the_unpruned_ranking_under_the_cap(agents, plans):
    query = "zeppelin budget hiring quarter"
    async with agents.app.state.sessionmaker() as session:
        counts = dict((await session.execute(text(COUNTS), {"kb": plans.id})).all())
    total = sum(counts[word] for word in ("zeppelin", "budget", "hire", "quarter"))
    expected = await unpruned(agents, plans, query)
    assert len(expected) == 10
    for cap in (2000, total):  # the default; all the words just fit
        hits = await keyword_search(agents, plans, query, cap=cap)
        assert [(hit.chunk_id, hit.score) for hit in hits] == expected
    blue = await keyword_search(agents, plans, query, cap=total, team="blue")
    assert [(hit.chunk_id, hit.score) for hit in blue] == await unpruned(
        agents, plans, query, team="blue"
    )
    assert [hit.filename for hit in blue] == ["zeppelin.txt"]


async def test_the_rare_word_comes_first_when_common_words_exceed_the_cap(agents, plans):
    query = "zeppelin budget hiring quarter"
    expected = await unpruned(agents, plans, query, top_k=5)
    hits = await keyword_search(agents, plans, query, cap=5, top_k=5)
    assert hits[0].filename == "zeppelin.txt"
    assert expected[0][0] != hits[0].chunk_id  # unpruned, the common words' chunks win
    # One candidate only: chunks holding only common words fill the rest, best first.
    assert len(hits) == 5 and {hit.filename for hit in hits[1:]} == {"plans.txt"}
    assert [h.score for h in hits[1:]] == [score for _, score in expected[:4]]
    # Degraded, every word in more than ``cap`` chunks: ``cap`` chunks ranked, no more.
    assert len(await keyword_search(agents, plans, "budget", cap=8, top_k=50)) == 8
    both = await keyword_search(agents, plans, "budget hiring", cap=8, top_k=50)
    assert len(both) == 8  # the chunks holding both words come first
    assert all("budget" in hit.content and "hiring" in hit.content for hit in both)
    assert await keyword_search(agents, plans, "the of and", cap=8) == []  # stop words only


async def test_searches_on_one_connection_keep_custom_plans(agents, plans):
    """asyncpg prepares each statement; after five runs Postgres may switch to a generic
    plan, which knows neither the query vector nor the LIMIT and scans every chunk."""
    engine = agents.app.state.sessionmaker.kw["bind"]
    model = agents.app.state.embedder.local  # the knowledge base's model
    results = []
    async with engine.connect() as conn, AsyncSession(bind=conn) as session:
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        for _ in range(10):
            for mode in ("hybrid", "keyword", "vector"):
                vector = await service.embed_query(model, "zeppelin budget hiring", mode)
                hits = await service.search(
                    session,
                    vector,
                    plans,
                    query="zeppelin budget hiring",
                    top_k=5,
                    mode=mode,
                    filter={},
                    ef_search=40,
                    keyword_candidate_cap=5,
                )
                results.append((mode, [(hit.chunk_id, hit.score) for hit in hits]))
            await session.commit()
        assert await session.scalar(text("SELECT pg_backend_pid()")) == pid
        assert await session.scalar(text("SHOW plan_cache_mode")) == "auto"  # local only
        prepared = await session.execute(
            text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        )
        plans_used = [row for row in prepared if "FROM agents.chunks c " in row.statement]
    assert plans_used and all(row.generic_plans == 0 for row in plans_used), plans_used
    assert max(row.custom_plans for row in plans_used) >= 10
    for mode in ("hybrid", "keyword", "vector"):
        runs = [hits for m, hits in results if m == mode]
        assert runs[0] and all(hits == runs[0] for hits in runs), mode


def test_the_rarest_words_are_picked_while_their_chunks_fit_the_cap():
    frequencies = {"common": 900, "rare": 3, "mid": 90, "absent": 0}
    assert plan_keyword(frequencies, 2000).picked == ["rare", "mid", "common"]
    assert plan_keyword(frequencies, 993).others == []
    plan = plan_keyword(frequencies, 992)
    assert (plan.picked, plan.others, plan.picked_chunks) == (["rare", "mid"], ["common"], 93)
    degraded = plan_keyword(frequencies, 2)
    assert degraded.picked == ["rare"] and degraded.degraded
    assert plan_keyword({"absent": 0}, 10).picked == []


async def test_lexemes_are_quoted_as_tsquery_operands(agents):
    odd = ["o'neil", "back\\slash", "two words", "pre:*", "a&b|c", "'", "\\", "!x", "é"]
    async with agents.app.state.sessionmaker() as session:
        for lexeme in odd:
            matched = await session.scalar(
                text("SELECT array_to_tsvector(ARRAY[:l]) @@ CAST(:q AS tsquery)"),
                {"l": lexeme, "q": tsquery_term(lexeme)},
            )
            assert matched, lexeme
            near_miss = await session.scalar(
                text("SELECT array_to_tsvector(ARRAY[:l || 'z']) @@ CAST(:q AS tsquery)"),
                {"l": lexeme, "q": tsquery_term(lexeme)},
            )
            assert not near_miss, lexeme
        everything = text("SELECT array_to_tsvector(CAST(:l AS text[])) @@ CAST(:q AS tsquery)")
        assert await session.scalar(everything, {"l": odd, "q": all_of(odd)})
        assert await session.scalar(everything, {"l": odd[:1], "q": any_of(odd)})
        assert not await session.scalar(everything, {"l": odd[:1], "q": all_of(odd)})

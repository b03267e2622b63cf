"""Knowledge search over 100,000 chunks: latency of the service's query and HNSW recall.

    uv run python -m bench.knowledge_search [--rows 100000] [--real 8000] [--queries 300]

Data: the real rows are up to ``--real`` chunks of Python standard-library docstrings (one
markdown document per module, split by the service's own splitter: 800 characters, 100
overlap), embedded with the local all-MiniLM-L6-v2. The other rows are generated from them
(seeded): a random real row, moved up to half-way (uniform) towards one of its 10 nearest
real rows, plus Gaussian noise with the real rows' covariance, re-normalized; the noise is
scaled so that a generated row is as similar to its parent (median cosine) as a real row
is to its nearest real row. A generated row's content is its parent's text (keyword
search sees real words). Queries are held out: the first sentences (5-25 words) of
docstrings, embedded one by one, none of them a row. The embeddings are cached in
``bench/.cache``; the generated rows are rebuilt from the seed in seconds.

Everything sits in ``agents.chunks`` (one knowledge base, 100 chunks per document) as
migrated; the HNSW index is rebuilt after loading with its definition from the migration.
Each query is ``agentmesh.agents.knowledge.service.search`` in its own transaction, as the
API runs it (its settings, custom plans included), sequentially, with the query vector
precomputed (embedding time shown apart). Recall@10 compares the vector search's 10 hits
with an exact numpy scan of all rows. Keyword search ranks candidates chosen by word
frequency (``keyword_candidate_cap``); its overlap@10 compares its hits with the unpruned
any-word ranking, for the first 50 queries, outside the timed loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import statistics
import sysconfig
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from agentmesh.agents.embeddings.local import DIMENSION, MODEL_NAME, LocalMiniLM
from bench.knowledge_ingest import as_markdown, stdlib_docstrings
from bench.servers import machine, percentile, servers

CACHE = Path(__file__).parent / ".cache"
SEED = 20261123
PER_DOCUMENT = 100
EF_SEARCHES = (40, 100, 200)
TOP_K = 10
#: Keyword search before pruning: every chunk holding any of the query's words, ranked.
UNPRUNED = """
    SELECT c.id FROM agents.chunks c,
        CAST(replace(CAST(plainto_tsquery('english', :text) AS text), '&', '|') AS tsquery) q
    WHERE c.knowledge_base_id = :kb AND c.tsv @@ q
    ORDER BY ts_rank_cd(c.tsv, q) DESC, c.id LIMIT :k"""


def real_texts(limit: int, queries: int) -> tuple[list[str], list[str]]:
    """(row texts, held-out query sentences) from the stdlib docstrings, seeded."""
    from agentmesh.agents.knowledge.ingest import split

    modules = stdlib_docstrings()
    rng = np.random.default_rng(SEED)
    rows = list(
        dict.fromkeys(
            chunk
            for module, docs in modules.items()
            for chunk, _ in split(as_markdown(module, docs), 800, 100)
        )
    )
    rows = [rows[i] for i in sorted(rng.choice(len(rows), min(limit, len(rows)), replace=False))]
    first = set()
    for docs in modules.values():
        for _, doc in docs:
            match = re.match(r"(.+?[.?!])(\s|$)", " ".join(doc.split()))
            if match and 5 <= len(match.group(1).split()) <= 25:
                first.add(match.group(1))
    existing = set(rows)
    candidates = sorted(s for s in first if s not in existing)
    picked = rng.choice(len(candidates), queries, replace=False)
    return rows, [candidates[i] for i in picked]


def embeddings(limit: int, queries: int) -> dict[str, Any]:
    """The real rows and the queries, embedded (cached in bench/.cache)."""
    key = f"{MODEL_NAME}-py{sysconfig.get_python_version()}-{limit}-{queries}-{SEED}"
    path = CACHE / f"knowledge_search-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"
    if path.exists():
        data = np.load(path)
        texts = json.loads(str(data["texts"]))
        return {"rows": data["rows"], "queries": data["queries"], **texts, "cached": True}
    rows, sentences = real_texts(limit, queries)
    model = LocalMiniLM()
    started = time.perf_counter()
    row_vectors = model.embed(rows)
    query_vectors = np.array([model.embed_query(s) for s in sentences], np.float32)
    seconds = time.perf_counter() - started
    CACHE.mkdir(exist_ok=True)
    texts = {"row_texts": rows, "query_texts": sentences, "embed_seconds": seconds}
    np.savez(path, rows=row_vectors, queries=query_vectors, texts=json.dumps(texts))
    return {"rows": row_vectors, "queries": query_vectors, **texts, "cached": False}


def nearest(vectors: np.ndarray, k: int, exclude_self: bool = True) -> np.ndarray:
    """Indices of each row's ``k`` most similar rows (cosine; unit vectors)."""
    out = np.empty((len(vectors), k), np.int64)
    for start in range(0, len(vectors), 2048):
        sims = vectors[start : start + 2048] @ vectors.T
        if exclude_self:
            sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1)
        out[start : start + len(sims)] = np.take_along_axis(top, order, 1)
    return out


def generate(real: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """``total`` unit vectors: the real ones, then generated ones; and each row's parent."""
    rng = np.random.default_rng(SEED)
    neighbours = nearest(real, 10)
    real_nn = float(np.median((real * real[neighbours[:, 0]]).sum(1)))
    count = total - len(real)
    parent = rng.integers(len(real), size=count)
    partner = neighbours[parent, rng.integers(10, size=count)]
    toward = rng.uniform(0, 0.5, (count, 1)).astype(np.float32)
    base = real[parent] + toward * (real[partner] - real[parent])
    shape = np.linalg.cholesky(np.cov(real.T) + 1e-9 * np.eye(real.shape[1]))
    noise = (rng.standard_normal((count, real.shape[1])) @ shape.T).astype(np.float32)

    def rows(scale: float, n: int = count) -> np.ndarray:
        v = base[:n] + np.float32(scale) * noise[:n]
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    low, high = 0.0, 4.0  # bisect the noise scale: median cos(row, parent) = real_nn
    for _ in range(30):
        mid = (low + high) / 2
        cos = float(np.median((rows(mid, 4000) * real[parent[:4000]]).sum(1)))
        low, high = (mid, high) if cos > real_nn else (low, mid)
    generated = rows(low)
    stats = {
        "real_nn_cos": real_nn,
        "noise_scale": low,
        "generated_parent_cos": float(np.median((generated * real[parent]).sum(1))),
    }
    return np.concatenate([real, generated]), np.concatenate([np.arange(len(real)), parent]), stats


class _Precomputed:
    """Stands in for the embedding model: the query vectors are computed beforehand."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.vectors = dict(zip(texts, vectors.tolist(), strict=True))

    async def aembed_query(self, text: str) -> list[float]:
        return self.vectors[text]


async def load(database_url: str, vectors: np.ndarray, texts: list[str]) -> dict[str, Any]:
    """Fill agents.chunks; rebuild the HNSW index as the migration defines it."""
    import asyncpg
    from pgvector.asyncpg import register_vector

    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    await register_vector(conn)
    owner, kb_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO agents.knowledge_bases (id, owner_id, name, embedding_model, dimension,"
        " chunk_size, chunk_overlap) VALUES ($1, $2, 'bench', $3, $4, 800, 100)",
        kb_id,
        owner,
        MODEL_NAME,
        DIMENSION,
    )
    documents = [uuid.uuid4() for _ in range(-(-len(vectors) // PER_DOCUMENT))]
    await conn.copy_records_to_table(
        "documents",
        schema_name="agents",
        columns=[
            "id",
            "knowledge_base_id",
            "owner_id",
            "filename",
            "content_type",
            "content_hash",
            "raw",
            "size_bytes",
            "status",
            "chunk_count",
            "metadata",
        ],
        records=[
            (
                d,
                kb_id,
                owner,
                f"doc-{i}.md",
                "text/markdown",
                d.hex,
                b"",
                0,
                "ready",
                PER_DOCUMENT,
                "{}",
            )
            for i, d in enumerate(documents)
        ],
    )
    indexdefs = dict(
        await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'agents'"
            " AND tablename = 'chunks'"
            " AND indexname IN ('ix_chunks_embedding_hnsw', 'ix_chunks_tsv')"
        )
    )
    for name in indexdefs:
        await conn.execute(f"DROP INDEX agents.{name}")
    order = np.random.default_rng(SEED).permutation(len(vectors))  # documents mix the rows
    started = time.perf_counter()
    await conn.copy_records_to_table(
        "chunks",
        schema_name="agents",
        columns=[
            "document_id",
            "knowledge_base_id",
            "position",
            "content",
            "headings",
            "embedding",
            "generation",  # the knowledge base's first embedding generation
        ],
        records=(
            (
                documents[slot // PER_DOCUMENT],
                kb_id,
                slot % PER_DOCUMENT,
                texts[row],
                "{}",
                vectors[row],
                1,
            )
            for slot, row in enumerate(order.tolist())
        ),
    )
    load_seconds = time.perf_counter() - started
    await conn.execute(indexdefs["ix_chunks_tsv"])
    await conn.execute("SET maintenance_work_mem = '1GB'")
    started = time.perf_counter()
    await conn.execute(indexdefs["ix_chunks_embedding_hnsw"])
    build_seconds = time.perf_counter() - started
    # Every loaded table, as autovacuum would within a minute: until documents has
    # statistics the planner expects few to match ``metadata @> '{}'`` and joins them to
    # their chunks, an exact scan of all 100k (~450 ms) instead of the HNSW index.
    await conn.execute("VACUUM ANALYZE agents.chunks, agents.documents, agents.kb_lexemes")
    slot_of = {
        (r["document_id"], r["position"]): r["id"]
        for r in await conn.fetch("SELECT id, document_id, position FROM agents.chunks")
    }
    row_ids = np.empty(len(vectors), np.int64)
    for slot, row in enumerate(order.tolist()):
        row_ids[row] = slot_of[(documents[slot // PER_DOCUMENT], slot % PER_DOCUMENT)]
    settings = {
        name: await conn.fetchval(f"SHOW {name}")
        for name in ("shared_buffers", "work_mem", "max_parallel_maintenance_workers")
    }
    result = {
        "kb_id": kb_id,
        "row_ids": row_ids,
        "load_seconds": load_seconds,
        "build_seconds": build_seconds,
        "indexdef": indexdefs["ix_chunks_embedding_hnsw"],
        "index_mb": await conn.fetchval(
            "SELECT pg_relation_size('agents.ix_chunks_embedding_hnsw') / 1048576.0"
        ),
        "table_mb": await conn.fetchval(
            "SELECT pg_total_relation_size('agents.chunks') / 1048576.0"
        ),
        "pgvector": await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ),
        "postgres": await conn.fetchval("SHOW server_version"),
        "settings": settings,
    }
    await conn.close()
    return result


async def run_queries(
    sessionmaker: Any,
    kb: Any,
    model: _Precomputed,
    queries: list[str],
    mode: str,
    ef_search: int,
    *,
    budget: float = float("inf"),
) -> tuple[list[float], list[list[int]]]:
    """Each query in its own transaction, as the API runs it; ms of the session,
    ``service.search`` and the commit. ``budget`` is a safety cap only: stops (after at
    least 10 queries) once that many seconds are spent."""
    from agentmesh.agents.knowledge import service

    latencies: list[float] = []
    hits = []
    deadline = time.monotonic() + budget
    for query in queries:
        started = time.perf_counter()
        vector = await service.embed_query(model, query, mode)  # as the API: before the session
        async with sessionmaker() as session, session.begin():
            found = await service.search(
                session,
                vector,
                kb,
                query=query,
                top_k=TOP_K,
                mode=mode,
                filter={},
                ef_search=ef_search,
            )
        latencies.append((time.perf_counter() - started) * 1000)
        hits.append([hit.chunk_id for hit in found])
        if len(latencies) >= 10 and time.monotonic() > deadline:
            break
    return latencies, hits


async def keyword_quality(
    sessionmaker: Any, kb: Any, queries: list[str], served: list[list[int]]
) -> dict[str, Any]:
    """Overlap@10 of the served (pruned) keyword hits with the unpruned any-word ranking
    (every chunk holding any of the words ranked; custom plan), and how each query's
    candidates were chosen. Not timed."""
    from sqlalchemy import text

    from agentmesh.agents.knowledge.repository import FREQUENCIES, SETTINGS
    from agentmesh.agents.knowledge.search import plan_keyword
    from agentmesh.agents.settings import AgentsSettings

    cap = AgentsSettings.model_fields["keyword_candidate_cap"].default
    overlaps, kinds, matches = [], {"all words": 0, "pruned": 0, "filled": 0, "degraded": 0}, []
    async with sessionmaker() as session:
        for query, hits in zip(queries, served, strict=False):
            setup = await session.execute(  # custom plans for UNPRUNED too, as the service
                text(SETTINGS + FREQUENCIES), {"text": query, "kb": kb.id, "ef_search": "100"}
            )
            frequencies = setup.one().frequencies or {}
            plan = plan_keyword(frequencies, cap)
            kind = "degraded" if plan.degraded else "pruned" if plan.others else "all words"
            kind = "filled" if kind == "pruned" and plan.picked_chunks < TOP_K else kind
            kinds[kind] += bool(plan.picked)
            unpruned = list(
                await session.scalars(
                    text(UNPRUNED),
                    {"kb": kb.id, "text": query, "k": TOP_K},
                )
            )
            matches.append(sum(frequencies.values()))
            if unpruned:
                overlaps.append(len(set(unpruned) & set(hits)) / len(unpruned))
        await session.rollback()
    return {
        "overlap": statistics.mean(overlaps),
        "sampled": len(overlaps),
        "cap": cap,
        "kinds": kinds,
        "df_sum_p50": statistics.median(matches),
    }


async def exact_in_postgres(sessionmaker: Any, vector: np.ndarray) -> list[int]:
    from sqlalchemy import text

    async with sessionmaker() as session, session.begin():
        await session.execute(text("SET LOCAL enable_indexscan = off"))
        rows = await session.execute(
            text("SELECT id FROM agents.chunks ORDER BY embedding <=> CAST(:q AS vector) LIMIT :k"),
            {"q": str(vector.tolist()), "k": TOP_K},
        )
        return [row.id for row in rows]


async def main(total: int, real: int, queries: int, budget: float = float("inf")) -> dict[str, Any]:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from agentmesh.agents.knowledge.models import KnowledgeBase

    data = embeddings(real, queries)
    vectors, parents, shape = generate(data["rows"], total)
    texts = [data["row_texts"][p] for p in parents]
    query_vectors, query_texts = data["queries"], data["query_texts"]
    exact = nearest_to(vectors, query_vectors, TOP_K)
    model = LocalMiniLM()
    embed_ms = []
    for sentence in query_texts[:50]:
        started = time.perf_counter()
        model.embed_query(sentence)
        embed_ms.append((time.perf_counter() - started) * 1000)
    figures: dict[str, Any] = {}
    async with servers() as (database_url, _nats_url):
        loaded = await load(database_url, vectors, texts)
        engine = create_async_engine(database_url, pool_size=1)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        async with sessionmaker() as session:
            kb = await session.get(KnowledgeBase, loaded["kb_id"])
        stub = _Precomputed(query_texts, query_vectors)
        ids = loaded["row_ids"]
        truth = [set(ids[row].tolist()) for row in exact]
        agree = 0
        for i in range(10):
            agree += set(await exact_in_postgres(sessionmaker, query_vectors[i])) == truth[i]
        print(f"knowledge search, agents.chunks ({machine()})")
        print(
            f"  Postgres {loaded['postgres']}, pgvector {loaded['pgvector']}, "
            + ", ".join(f"{k} {v}" for k, v in loaded["settings"].items())
        )
        print(
            f"  rows {len(vectors):,} x {vectors.shape[1]} dims, one knowledge base, "
            f"{PER_DOCUMENT} chunks per document; table + indexes {loaded['table_mb']:.0f} MB"
        )
        print(
            f"  real rows: {len(data['rows']):,} stdlib docstring chunks (800 chars max), "
            f"{MODEL_NAME}"
            + (" (cached)" if data["cached"] else f" (embedded in {data['embed_seconds']:.0f} s)")
        )
        print(
            f"  generated rows: {len(vectors) - len(data['rows']):,} = parent + U(0, 0.5) of "
            f"the way to one of its 10 nearest real rows + {shape['noise_scale']:.3f} x "
            f"N(0, cov of the real rows), normalized; median cos to parent "
            f"{shape['generated_parent_cos']:.3f} (a real row to its nearest real row: "
            f"{shape['real_nn_cos']:.3f})"
        )
        print(
            f"  queries: {len(query_texts)} held-out docstring first sentences, sequential, "
            f"one connection, top_k {TOP_K}; embedding a query (local model, not in the "
            f"figures) p50 {statistics.median(embed_ms):.1f} ms"
        )
        print(
            f"  index: {loaded['indexdef'].split(' USING ')[1]} (migration), built in "
            f"{loaded['build_seconds']:.1f} s with maintenance_work_mem 1GB, "
            f"{loaded['index_mb']:.0f} MB; COPY of the rows {loaded['load_seconds']:.1f} s (the "
            f"kb_lexemes trigger counting their words included)"
        )
        print(
            f"  exact top-{TOP_K}: numpy scan of all rows (same set as a Postgres seq scan "
            f"for {agree}/10 queries checked)"
        )
        await run_queries(sessionmaker, kb, stub, query_texts[:20], "vector", 100)  # warm-up
        runs = [("vector", ef) for ef in EF_SEARCHES] + [("hybrid", 100), ("keyword", 100)]
        for mode, ef in runs:
            latencies, hits = await run_queries(
                sessionmaker, kb, stub, query_texts, mode, ef, budget=budget
            )
            figure = {
                "queries": len(latencies),
                "p50": statistics.median(latencies),
                "p95": percentile(latencies, 95),
                "p99": percentile(latencies, 99),
            }
            line = (
                f"  {mode:7s} "
                + (f"ef_search {ef:3d}" if mode != "keyword" else " " * 13)
                + f"  p50 {figure['p50']:6.1f} ms  p95 {figure['p95']:6.1f} ms  p99 "
                f"{figure['p99']:6.1f} ms"
            )
            if mode == "vector":
                figure["recall"] = statistics.mean(
                    len(truth[i] & set(h)) / TOP_K for i, h in enumerate(hits)
                )
                line += f"  recall@{TOP_K} {figure['recall']:.3f}"
            if mode == "keyword":
                quality = await keyword_quality(sessionmaker, kb, query_texts[:50], hits)
                figure |= quality
                line += (
                    f"  overlap@{TOP_K} with the unpruned ranking {quality['overlap']:.3f}"
                    f" ({quality['sampled']} queries)"
                )
            if len(latencies) < len(query_texts):
                line += f"  (stopped after {len(latencies)} queries: {budget:.0f} s cap)"
            print(line, flush=True)
            if mode == "keyword":
                kinds = ", ".join(f"{n} {k}" for k, n in figure["kinds"].items())
                print(
                    f"  keyword candidates (keyword_candidate_cap {figure['cap']}, first 50 "
                    f"queries): {kinds}; chunks holding a query word, summed over its words, "
                    f"p50 {figure['df_sum_p50']:,.0f}",
                    flush=True,
                )
            figures[f"{mode}@{ef}"] = figure
        await engine.dispose()
    return figures


def nearest_to(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` rows by cosine for each query (unit vectors)."""
    sims = queries @ vectors.T
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), 1), 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=8000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--budget",
        type=float,
        default=float("inf"),
        help="safety cap: seconds per run of 300 queries (none by default)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.real, args.queries, args.budget))

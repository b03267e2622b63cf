"""Knowledge search in one knowledge base among 1,000: recall@10 and latency per size.

    uv run python -m bench.knowledge_tenants [--rows 200000] [--kbs 1000] [--queries 100]

Every knowledge base of every tenant shares ``agents.chunks`` and its one HNSW index. A
vector search filtered to one knowledge base walks that graph until it has found ten of
its chunks (pgvector's iterative scan): for a large knowledge base that is quick, for a
small one among many the walk visits mostly other tenants' chunks, and it may stop
(``hnsw.max_scan_tuples``) before it finds the true nearest ones. This bench loads
``--rows`` chunks into ``--kbs`` knowledge bases of 50 to 50,000 chunks and measures, for
knowledge bases of several sizes, the service's vector search (``service.search``, as the
API runs it, one transaction per query, sequential) through the shared HNSW index and
exactly (``exact_below``: the knowledge base's own chunks by the ``knowledge_base_id``
index, every distance computed), beside recall@10 against an exact numpy scan of that
knowledge base's rows.

Vectors: the rows and held-out queries of ``bench.knowledge_search`` (stdlib docstring
chunks embedded with the local all-MiniLM-L6-v2, plus generated rows around them),
assigned to knowledge bases at random; each query is searched in every measured
knowledge base.
"""

# SQL is assembled from this module's constants only.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import numpy as np

from agentmesh.agents.embeddings.local import DIMENSION, MODEL_NAME
from agentmesh.agents.knowledge.search import EXACT_SCAN_BELOW
from bench.knowledge_search import (
    PER_DOCUMENT,
    SEED,
    TOP_K,
    _Precomputed,
    embeddings,
    generate,
    nearest_to,
)
from bench.servers import machine, percentile, servers

#: The sizes measured (each one knowledge base), and the two ends the target names.
MEASURED = (50, 200, 1_000, 5_000, 10_000, 20_000, 50_000)


def sizes(total: int, count: int) -> list[int]:
    """``count`` knowledge-base sizes summing to ``total``: one of each measured size, the
    rest log-uniform from 50 up, scaled to fill the total (at least 50 each)."""
    rng = np.random.default_rng(SEED)
    fixed = list(MEASURED)
    rest = count - len(fixed)
    left = total - sum(fixed)
    if rest <= 0 or left < 50 * rest:
        raise SystemExit(f"{total} rows cannot fill {count} knowledge bases of at least 50")
    # 50 each, and the rest of the rows shared out log-uniformly (exact total).
    draw = np.exp(rng.uniform(np.log(1), np.log(20), rest))
    extra = np.floor(draw * (left - 50 * rest) / draw.sum()).astype(int)
    extra[: left - 50 * rest - int(extra.sum())] += 1
    scaled = 50 + extra
    assert int(scaled.sum()) == left and scaled.min() >= 50
    return fixed + scaled.tolist()


async def load(database_url: str, vectors: np.ndarray, texts: list[str], kb_sizes: list[int]):
    """Every knowledge base, its documents and chunks (rows assigned at random); the HNSW
    index rebuilt as the migration defines it. Returns each knowledge base's id and rows."""
    import asyncpg
    from pgvector.asyncpg import register_vector

    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    await register_vector(conn)
    columns = {
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'agents'"
            " AND table_name = 'knowledge_bases'"
        )
    }
    workspace = ", workspace_id" if "workspace_id" in columns else ""
    order = np.random.default_rng(SEED).permutation(len(vectors))
    kbs, documents, chunks, start = [], [], [], 0
    for size in kb_sizes:
        kb_id, owner = uuid.uuid4(), uuid.uuid4()
        rows = order[start : start + size]
        start += size
        kbs.append((kb_id, owner, rows))
        docs = [uuid.uuid4() for _ in range(-(-size // PER_DOCUMENT))]
        for i, d in enumerate(docs):
            count = min(PER_DOCUMENT, size - i * PER_DOCUMENT)
            documents.append((d, kb_id, owner, f"doc-{i}.md", d.hex, count))
        for slot, row in enumerate(rows.tolist()):
            chunks.append(
                (docs[slot // PER_DOCUMENT], kb_id, slot % PER_DOCUMENT, texts[row], vectors[row])
            )
    # The optional column is this module's constant, never input.
    insert = (
        "INSERT INTO agents.knowledge_bases (id, owner_id, name, embedding_model, dimension,"
        f" chunk_size, chunk_overlap{workspace}) VALUES ($1, $2, 'bench', $3, $4, 800, 100"
        + (", $2)" if workspace else ")")
    )
    await conn.executemany(
        insert,
        [(kb_id, owner, MODEL_NAME, DIMENSION) for kb_id, owner, _ in kbs],
    )
    doc_columns = [
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
    ]
    doc_columns += ["workspace_id"] if workspace else []
    await conn.copy_records_to_table(
        "documents",
        schema_name="agents",
        columns=doc_columns,
        records=[
            (d, kb, owner, name, "text/markdown", digest, b"", 0, "ready", count, "{}")
            + ((owner,) if workspace else ())
            for d, kb, owner, name, digest, count in documents
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
        records=((d, kb, pos, content, "{}", vec, 1) for d, kb, pos, content, vec in chunks),
    )
    load_seconds = time.perf_counter() - started
    await conn.execute(indexdefs["ix_chunks_tsv"])
    await conn.execute("SET maintenance_work_mem = '1GB'")
    started = time.perf_counter()
    await conn.execute(indexdefs["ix_chunks_embedding_hnsw"])
    build_seconds = time.perf_counter() - started
    await conn.execute("VACUUM ANALYZE agents.chunks, agents.documents, agents.knowledge_bases")
    ids = {
        (r["document_id"], r["position"]): r["id"]
        for r in await conn.fetch("SELECT id, document_id, position FROM agents.chunks")
    }
    chunk_ids = np.empty(len(vectors), np.int64)
    for (d, _kb, pos, _c, _v), row in zip(
        chunks, np.concatenate([r for *_, r in kbs]).tolist(), strict=True
    ):
        chunk_ids[row] = ids[(d, pos)]
    info = {
        "load_seconds": load_seconds,
        "build_seconds": build_seconds,
        "indexdef": indexdefs["ix_chunks_embedding_hnsw"],
        "pgvector": await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ),
        "postgres": await conn.fetchval("SHOW server_version"),
        "max_scan_tuples": await conn.fetchval("SHOW hnsw.max_scan_tuples"),
    }
    await conn.close()
    return [(kb_id, rows) for kb_id, _, rows in kbs], chunk_ids, info


async def measure(sessionmaker, kb, model, queries: list[str], exact_below: int) -> tuple:
    """ms per query (session, search, commit) and the hits, as the API runs a search."""
    from agentmesh.agents.knowledge import service

    latencies, hits = [], []
    for query in queries:
        started = time.perf_counter()
        vector = await service.embed_query(model, query, "vector")
        async with sessionmaker() as session, session.begin():
            found = await service.search(
                session,
                vector,
                kb,
                query=query,
                top_k=TOP_K,
                mode="vector",
                filter={},
                ef_search=100,
                exact_below=exact_below,
            )
        latencies.append((time.perf_counter() - started) * 1000)
        hits.append([hit.chunk_id for hit in found])
    return latencies, hits


async def main(total: int, count: int, real: int, queries: int) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from agentmesh.agents.knowledge.models import KnowledgeBase

    data = embeddings(real, 300)
    vectors, parents, _shape = generate(data["rows"], total)
    texts = [data["row_texts"][p] for p in parents]
    query_vectors = data["queries"][:queries]
    query_texts = data["query_texts"][:queries]
    kb_sizes = sizes(total, count)
    async with servers() as (database_url, _nats_url):
        kbs, chunk_ids, info = await load(database_url, vectors, texts, kb_sizes)
        engine = create_async_engine(database_url, pool_size=1)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        stub = _Precomputed(data["query_texts"], data["queries"])
        print(f"knowledge search, one knowledge base among {count:,} ({machine()})")
        print(
            f"  Postgres {info['postgres']}, pgvector {info['pgvector']}; {total:,} chunks x "
            f"{vectors.shape[1]} dims in {count:,} knowledge bases of {min(kb_sizes):,} to "
            f"{max(kb_sizes):,} chunks (median {int(statistics.median(kb_sizes))})"
        )
        print(
            f"  one HNSW index for all: {info['indexdef'].split(' USING ')[1]}, built in "
            f"{info['build_seconds']:.0f} s; hnsw.ef_search 100, iterative_scan "
            f"relaxed_order, max_scan_tuples {info['max_scan_tuples']}"
        )
        print(
            f"  {queries} held-out queries per knowledge base, sequential, one connection, "
            f"top_k {TOP_K}; recall@{TOP_K} against an exact numpy scan of the knowledge "
            f"base's rows; the service searches exactly below {EXACT_SCAN_BELOW:,} chunks"
        )
        print(
            f"  {'chunks':>7}  {'HNSW p50':>9} {'p95':>7} {'recall':>7}   "
            f"{'exact p50':>9} {'p95':>7} {'recall':>7}   served"
        )
        for index, size in enumerate(MEASURED):
            kb_id, rows = kbs[index]
            async with sessionmaker() as session:
                kb = await session.get(KnowledgeBase, kb_id)
            truth_rows = nearest_to(vectors[rows], query_vectors, min(TOP_K, size))
            truth = [set(chunk_ids[rows[t]].tolist()) for t in truth_rows]
            await measure(sessionmaker, kb, stub, query_texts[:10], 0)  # warm-up
            line = f"  {size:>7,}"
            for exact_below in (0, 1 << 62):
                latencies, hits = await measure(sessionmaker, kb, stub, query_texts, exact_below)
                recall = statistics.mean(
                    len(truth[i] & set(h)) / len(truth[i]) for i, h in enumerate(hits)
                )
                line += (
                    f"  {statistics.median(latencies):7.1f}ms {percentile(latencies, 95):5.1f}ms"
                    f" {recall:7.3f} "
                )
            line += "  exact" if size < EXACT_SCAN_BELOW else "  HNSW"
            print(line, flush=True)
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--kbs", type=int, default=1000)
    parser.add_argument("--real", type=int, default=8000)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.kbs, args.real, args.queries))

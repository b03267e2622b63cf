"""Local embedding throughput (all-MiniLM-L6-v2 on numpy), alone and through ingest.

    uv run python -m bench.knowledge_ingest [--tokens 200] [--batch 32] [--chunks 256]
                                            [--documents 20] [--runs 3]

Text: docstrings of the Python standard library (parsed with ``ast``, never imported),
so the figures need no network and no data set.

1. Embedding only: ``LocalMiniLM.embed`` on ``--chunks`` chunks of ``--tokens`` tokens
   each ([CLS] and [SEP] included), ``batch_size=--batch``; one warm-up batch, then the
   median of ``--runs`` runs.
2. Ingest path: ``--documents`` markdown documents (stdlib modules drawn at random with a
   fixed seed, one ``## heading`` per documented class or function) as pending uploads in
   one knowledge base with the service defaults (chunks of 800 characters, 100 overlap),
   indexed by the service's ingest worker (``agentmesh.agents.knowledge.worker``, one
   slot: one worker process, the document's owner's cap allows one at a time): claim,
   extract, split, embed (batches of 64) in the worker process, write the chunks and the
   outbox event, on embedded Postgres. The worker process is started (and the model
   loaded in it) before the clock starts.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hashlib
import os
import random
import statistics
import sysconfig
import time
import uuid
from pathlib import Path
from typing import Any

from agentmesh.agents.embeddings.local import LocalMiniLM, model_dir
from bench.servers import machine, servers

Docstrings = list[tuple[str, str]]
SEED = 20261123


def stdlib_docstrings() -> dict[str, Docstrings]:
    """``{module: [(qualified name, docstring), ...]}`` for the standard library, tests and
    IDLE left out, in a stable order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3"}
    modules: dict[str, Docstrings] = {}
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        docs = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= 4:
                    docs.append((getattr(node, "name", name), doc))
        if docs:
            modules[name] = docs
    return modules


def as_markdown(module: str, docs: Docstrings) -> str:
    """A module's docstrings as one markdown document, as a user might upload docs."""
    parts = [f"# {module}\n"]
    for name, doc in docs:
        parts.append(doc if name == module else f"## {name}\n\n{doc}")
    return "\n\n".join(parts) + "\n"


def token_chunks(modules: dict[str, Docstrings], tokens: int, count: int) -> list[str]:
    """``count`` consecutive pieces of the docstring text, ``tokens`` tokens each."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    text = " ".join(" ".join(doc.split()) for docs in modules.values() for _, doc in docs)
    ids = tokenizer.encode(text[: 20 * tokens * count], add_special_tokens=False).ids
    body = tokens - 2
    return [tokenizer.decode(ids[i * body : (i + 1) * body]) for i in range(count)]


def embedding_only(model: LocalMiniLM, chunks: list[str], runs: int) -> dict[str, float]:
    model.embed(chunks[: model.batch_size])  # warm-up
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        model.embed(chunks)
        rates.append(len(chunks) / (time.perf_counter() - started))
    lengths = [len(e.ids) for e in model.tokenizer.encode_batch(chunks)]
    return {
        "chunks_per_s": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "tokens": statistics.mean(lengths),
    }


async def ingest_path(model: LocalMiniLM, documents: list[tuple[str, str]]) -> dict[str, Any]:
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from agentmesh.agents.base import EVENT_TABLES
    from agentmesh.agents.knowledge import ingest
    from agentmesh.agents.knowledge.embedding import Embedder
    from agentmesh.agents.knowledge.models import Chunk, Document, KnowledgeBase
    from agentmesh.agents.knowledge.worker import IngestWorker
    from agentmesh.agents.settings import AgentsSettings
    from agentmesh.shared.crypto import SecretBox
    from agentmesh.shared.events.outbox import Outbox
    from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY

    async with servers() as (database_url, _nats_url):
        engine = create_async_engine(database_url, pool_size=5)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        owner = uuid.uuid4()
        async with sessionmaker() as session, session.begin():
            kb = KnowledgeBase(owner_id=owner, name="bench")
            session.add(kb)
            await session.flush()
            ids = []
            for filename, text in documents:
                raw = text.encode()
                document = Document(
                    knowledge_base_id=kb.id,
                    owner_id=owner,
                    filename=filename,
                    content_type="text/markdown",
                    content_hash=hashlib.sha256(raw).hexdigest(),
                    raw=raw,
                    size_bytes=len(raw),
                    status="pending",
                    doc_metadata={},
                )
                session.add(document)
                await session.flush()
                ids.append(document.id)
            chunk_size, overlap = kb.chunk_size, kb.chunk_overlap
        embedder = Embedder(model, SecretBox(TEST_KEY_ENCRYPTION_KEY, purpose="bench"))
        outbox = Outbox(EVENT_TABLES, source="agents")
        settings = AgentsSettings(
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
            ingest_concurrency=1,
            ingest_poll_seconds=0.05,
            ingest_worker_nice=0,
        )
        worker = IngestWorker(sessionmaker, outbox, embedder, settings)
        await worker.slots[0].run(ingest.embed_local, ["warm up"])
        started = time.perf_counter()
        worker.start()
        done = select(func.count()).where(Document.status.in_(["ready", "failed"]))
        while True:
            async with sessionmaker() as session:
                if await session.scalar(done) == len(ids):
                    break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        await worker.stop()
        async with sessionmaker() as session:
            chunks = await session.scalar(select(func.count()).select_from(Chunk))
            ready = await session.scalar(
                select(func.count()).where(Document.status == "ready").select_from(Document)
            )
            mean_chars = await session.scalar(select(func.avg(func.length(Chunk.content))))
        await engine.dispose()
    return {
        "documents": len(ids),
        "ready": ready,
        "chunks": chunks,
        "seconds": elapsed,
        "chunks_per_s": chunks / elapsed,
        "chunk_size": chunk_size,
        "overlap": overlap,
        "mean_chars": float(mean_chars),
    }


async def main(tokens: int, batch: int, chunks: int, documents: int, runs: int) -> dict:
    modules = stdlib_docstrings()
    model = LocalMiniLM(batch_size=batch)
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "numpy's default (one per core)")
    print(f"local embeddings, all-MiniLM-L6-v2 on numpy ({machine()})")
    print(f"  text: Python {sysconfig.get_python_version()} stdlib docstrings; BLAS threads {blas}")
    alone = embedding_only(model, token_chunks(modules, tokens, chunks), runs)
    print(
        f"  embedding only: {chunks} chunks of {alone['tokens']:.0f} tokens, batch {batch}: "
        f"{alone['chunks_per_s']:.1f} chunks/s (median of {runs}; min {alone['min']:.1f}, "
        f"max {alone['max']:.1f})",
        flush=True,
    )
    path = None
    if documents:
        sample = random.Random(SEED).sample(sorted(modules), documents)
        docs = [(f"{m}.md", as_markdown(m, modules[m])) for m in sample]
        path = await ingest_path(LocalMiniLM(), docs)
        print(
            f"  ingest path: {path['documents']} markdown documents ({path['ready']} ready), "
            f"{path['chunks']} chunks of <= {path['chunk_size']} chars (mean "
            f"{path['mean_chars']:.0f}, overlap {path['overlap']}), embed batch 64 -> model "
            f"batch 32: {path['chunks_per_s']:.1f} chunks/s end to end "
            f"({path['seconds']:.1f} s, in the ingest worker's process)"
        )
    return {"embedding_only": alone, "ingest_path": path}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.batch, args.chunks, args.documents, args.runs))

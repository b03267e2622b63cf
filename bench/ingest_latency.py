"""Request latency of the agents service while it ingests a 20 MiB PDF, beside none.

    uv run python -m bench.ingest_latency [--mib 20] [--seconds 20] [--window 120]
                                          [--clients 4] [--chunk-size 8000]

identity and agents run as separate uvicorn processes (one worker each, service defaults:
two ingest slots, worker processes at niceness 10) on embedded Postgres and NATS. The
bench registers a user, creates 20 agents and a knowledge base (local model), then:

1. No ingest: ``--clients`` concurrent loops of ``GET /api/v1/agents`` (straight to the
   agents service, with a JWT) for ``--seconds``; p50 / p99 / max.
2. Ingest: a text PDF of ``--mib`` MiB (made here: uncompressed Helvetica pages of
   generated sentences, about 70 lines a page) uploaded as multipart, and the same loops
   from the upload until the document is ``ready`` or ``--window`` seconds have passed.
   Latencies are split by what the document was doing when each request started:
   ``parsing`` (claimed, text not yet split) and ``embedding`` (``chunks_done`` rising).

``--chunk-size`` sets the knowledge base's chunking (8000 characters: the local model
reads 256 tokens of each chunk, so large chunks keep the embedding phase short).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import aiohttp

from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY
from agentmesh.shared.testing.pdf import filler_pages, text_pdf
from bench.gateway import spawn, wait_ready
from bench.servers import machine, percentile, servers


def make_pdf(mib: float) -> bytes:
    target = int(mib * 1024 * 1024)
    pdf = text_pdf(filler_pages(target))
    while len(pdf) < target:  # the page estimate is a little short: top up
        pdf = text_pdf(filler_pages(target + (target - len(pdf)) + 65536))
    return pdf


async def load(
    session: aiohttp.ClientSession, url: str, headers: dict, clients: int, running, state: dict
) -> dict[str, list[float]]:
    """Latencies (ms) of GET ``url`` by ``clients`` loops while ``running()``, keyed by
    ``state["phase"]`` at the time each request was sent."""
    out: dict[str, list[float]] = {}

    async def loop() -> None:
        while running():
            phase = state["phase"]
            started = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
                assert response.status == 200, response.status
            out.setdefault(phase, []).append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(loop() for _ in range(clients)))
    return out


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):.1f} ms, p99 {percentile(values, 99):.1f} ms, "
        f"max {max(values):.1f} ms ({len(values)} requests)"
    )


async def main(mib: float, seconds: float, window: float, clients: int, chunk_size: int) -> dict:
    pdf = make_pdf(mib)
    async with servers() as (database_url, nats_url):
        ports = {name: free_port() for name in ("identity", "agents")}
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env = dict(
            os.environ,
            AGENTMESH_ENV="production",
            AGENTMESH_DATABASE_URL=database_url,
            AGENTMESH_NATS_URL=nats_url,
            AGENTMESH_LOG_LEVEL="WARNING",
            AGENTMESH_INTERNAL_TOKEN=TEST_INTERNAL_TOKEN,
            IDENTITY_KEY_ENCRYPTION_KEY=TEST_KEY_ENCRYPTION_KEY,
            AGENTS_PROVIDER_ENCRYPTION_KEY=TEST_KEY_ENCRYPTION_KEY,
            AGENTS_MAX_DOCUMENT_BYTES=str(len(pdf) + 65536),
            AGENTMESH_JWKS_URL=f"{base['identity']}/.well-known/jwks.json",
        )
        processes = [spawn(f"agentmesh.{name}.app:create_app", ports[name], env) for name in ports]
        try:
            for name in ports:
                await wait_ready(f"{base[name]}/health/ready", 120)
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                body = {
                    "email": "ingest-bench@example.com",
                    "name": "Bench",
                    "password": "correct horse battery staple",
                }
                await session.post(f"{base['identity']}/api/v1/auth/register", json=body)
                async with session.post(
                    f"{base['identity']}/api/v1/auth/login", json=body
                ) as response:
                    headers = {"Authorization": f"Bearer {(await response.json())['access_token']}"}
                agents = f"{base['agents']}/api/v1/agents"
                for i in range(20):
                    agent = {"name": f"Agent {i}", "model": "offline"}
                    async with session.post(agents, headers=headers, json=agent) as r:
                        assert r.status == 201, await r.text()
                kbs = f"{base['agents']}/api/v1/knowledge-bases"
                kb_body = {"name": "bench", "chunk_size": chunk_size, "chunk_overlap": 0}
                async with session.post(kbs, headers=headers, json=kb_body) as r:
                    kb = (await r.json())["id"]
                state = {"phase": "idle"}
                for _ in range(50):  # warm-up
                    async with session.get(agents, headers=headers) as r:
                        await r.read()
                ends = time.monotonic() + seconds
                idle = await load(
                    session, agents, headers, clients, lambda: time.monotonic() < ends, state
                )
                form = aiohttp.FormData()
                form.add_field("file", pdf, filename="big.pdf", content_type="application/pdf")
                state["phase"] = "upload"
                uploaded = time.monotonic()
                ingesting = {"on": True, "document": None}

                async def watch() -> None:
                    async with session.post(
                        f"{kbs}/{kb}/documents", headers=headers, data=form
                    ) as r:
                        assert r.status == 202, await r.text()
                        document = (await r.json())["id"]
                    while time.monotonic() - uploaded < window:
                        async with session.get(
                            f"{kbs}/{kb}/documents/{document}", headers=headers
                        ) as r:
                            found = await r.json()
                        ingesting["document"] = found
                        if found["status"] in ("ready", "failed"):
                            break
                        state["phase"] = (
                            "queued"
                            if found["status"] == "pending"
                            else "parsing"
                            if found["chunks_total"] is None
                            else "embedding"
                        )
                        await asyncio.sleep(0.2)
                    ingesting["on"] = False

                watcher = asyncio.create_task(watch())
                during = await load(
                    session, agents, headers, clients, lambda: ingesting["on"], state
                )
                await watcher
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
    document = ingesting["document"] or {}
    return {
        "pdf_bytes": len(pdf),
        "idle": idle,
        "during": during,
        "document": document,
        "elapsed": time.monotonic() - uploaded,
    }


def report(result: dict, clients: int) -> None:
    document, during = result["document"], result["during"]
    everything = [v for phase in during.values() for v in phase]
    print(f"GET /api/v1/agents latency during a PDF ingest ({machine()})")
    print(f"  {clients} concurrent clients, straight to agents (1 uvicorn worker), 20 agents")
    print(f"  no ingest:   {summary(result['idle']['idle'])}")
    print(f"  with ingest: {summary(everything)}")
    for phase in ("upload", "queued", "parsing", "embedding"):
        if during.get(phase):
            print(f"    {phase:>9}: {summary(during[phase])}")
    print(
        f"  document: {result['pdf_bytes'] / 2**20:.1f} MiB PDF, {document.get('status')} "
        f"after {result['elapsed']:.0f} s, chunks {document.get('chunks_done')}/"
        f"{document.get('chunks_total')}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--window", type=float, default=120)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=8000)
    args = parser.parse_args()
    outcome = asyncio.run(main(args.mib, args.seconds, args.window, args.clients, args.chunk_size))
    report(outcome, args.clients)

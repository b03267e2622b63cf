"""The size of each service's ``GET /metrics`` page after some use of the platform.

    uv run python -m bench.metrics_page [--turns 5]

identity, agents, chat and the gateway run as separate uvicorn processes on embedded
Postgres and NATS (the gateway serves its metrics on ``AGENTMESH_METRICS_PORT``, the
others on their own port). Through the gateway: sign up, log in, a provider on a local
OpenAI-compatible server, an agent, a knowledge base with one document indexed, a
conversation with ``--turns`` streamed turns, a few lists and a 404. Then each page's bytes
and sample lines are printed. The page grows with route templates and label values
seen (consumers, models, upstreams), never with ids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY
from bench.gateway import spawn, wait_ready
from bench.servers import machine, servers

SERVICES = ("identity", "agents", "chat", "gateway")


async def use_the_platform(
    session: aiohttp.ClientSession, gw: str, llm_url: str, turns: int
) -> None:
    body = {
        "email": "metrics-bench@example.com",
        "name": "Bench",
        "password": "correct horse battery staple",
    }
    await session.post(f"{gw}/api/v1/auth/register", json=body)
    async with session.post(f"{gw}/api/v1/auth/login", json=body) as response:
        token = (await response.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(
        f"{gw}/api/v1/providers",
        headers=headers,
        json={"kind": "openai", "name": "fake", "base_url": llm_url, "api_key": "test-key"},
    ) as response:
        provider = (await response.json())["id"]
    async with session.post(
        f"{gw}/api/v1/agents",
        headers=headers,
        json={"name": "Bench", "provider_id": provider, "model": "fake-model"},
    ) as r:
        agent = (await r.json())["id"]
    async with session.post(
        f"{gw}/api/v1/knowledge-bases", headers=headers, json={"name": "Bench"}
    ) as r:
        kb = (await r.json())["id"]
    doc_body = {"text": "# Refunds\nWithin 30 days.\n\n# Shipping\nFrom Lyon.", "filename": "a.md"}
    async with session.post(
        f"{gw}/api/v1/knowledge-bases/{kb}/documents", headers=headers, json=doc_body
    ) as r:
        doc = (await r.json())["id"]
    for _ in range(600):
        async with session.get(
            f"{gw}/api/v1/knowledge-bases/{kb}/documents/{doc}", headers=headers
        ) as r:
            if (await r.json())["status"] in ("ready", "failed"):
                break
        await asyncio.sleep(0.1)
    conversation = None
    for _ in range(200):  # until chat's read-model has the agent
        async with session.post(
            f"{gw}/api/v1/conversations", headers=headers, json={"agent_id": agent, "title": "b"}
        ) as r:
            if r.status == 201:
                conversation = (await r.json())["id"]
                break
        await asyncio.sleep(0.05)
    assert conversation, "chat never saw the agent"
    for _ in range(turns):
        turn = {"content": "hi", "stream": True}
        url = f"{gw}/api/v1/conversations/{conversation}/messages"
        async with session.post(url, headers=headers, json=turn) as r:
            await r.read()
    missing = "/api/v1/agents/00000000-0000-0000-0000-000000000000"
    for path in (
        "/api/v1/users/me",
        "/api/v1/agents",
        "/api/v1/providers",
        "/api/v1/conversations",
        missing,
    ):
        async with session.get(f"{gw}{path}", headers=headers) as r:
            await r.read()


async def main(turns: int, dump: str | None = None) -> dict[str, tuple[int, int]]:
    async with servers() as (database_url, nats_url):
        llm = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_llm", "0.01", "0.001"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        llm_url = llm.stdout.readline().decode().strip()  # type: ignore[union-attr]
        ports = {name: free_port() for name in SERVICES}
        gateway_metrics = free_port()
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        unlimited = {"rate_limit": {"rate": 1e9, "burst": 10**9}}
        env = dict(
            os.environ,
            AGENTMESH_ENV="production",
            AGENTMESH_DATABASE_URL=database_url,
            AGENTMESH_NATS_URL=nats_url,
            AGENTMESH_LOG_LEVEL="WARNING",
            AGENTMESH_INTERNAL_TOKEN=TEST_INTERNAL_TOKEN,
            AGENTMESH_ALLOW_PRIVATE_NETWORK="true",
            IDENTITY_KEY_ENCRYPTION_KEY=TEST_KEY_ENCRYPTION_KEY,
            AGENTS_PROVIDER_ENCRYPTION_KEY=TEST_KEY_ENCRYPTION_KEY,
            AGENTMESH_JWKS_URL=f"{base['identity']}/.well-known/jwks.json",
            GATEWAY_IDENTITY_URL=base["identity"],
            GATEWAY_AGENTS_URL=base["agents"],
            GATEWAY_CHAT_URL=base["chat"],
            GATEWAY_GROUPS=json.dumps(
                {
                    g: unlimited
                    for g in ("auth", "identity", "agents", "knowledge", "chat", "chat_runs")
                }
            ),
        )
        envs = {name: env for name in SERVICES}
        envs["gateway"] = dict(env, AGENTMESH_METRICS_PORT=str(gateway_metrics))
        processes = [
            spawn(f"agentmesh.{name}.app:create_app", ports[name], envs[name]) for name in SERVICES
        ]
        pages = {name: f"{base[name]}/metrics" for name in SERVICES}
        pages["gateway"] = f"http://127.0.0.1:{gateway_metrics}/metrics"
        try:
            for name in SERVICES:
                await wait_ready(f"{base[name]}/health/ready", 120)
            async with aiohttp.ClientSession() as session:
                await use_the_platform(session, base["gateway"], llm_url, turns)
                await asyncio.sleep(1)  # a refresh of the gauges read from Postgres or NATS
                sizes = {}
                for name, url in pages.items():
                    async with session.get(url) as response:
                        page = await response.read()
                    samples = sum(1 for line in page.splitlines() if not line.startswith(b"#"))
                    sizes[name] = (len(page), samples)
                    if dump:
                        target = Path(dump) / f"{name}.txt"
                        await asyncio.to_thread(target.write_bytes, page)
        finally:
            for process in (*processes, llm):
                process.terminate()
            for process in (*processes, llm):
                process.wait(timeout=30)
    return sizes


def report(sizes: dict[str, tuple[int, int]], turns: int) -> None:
    print(f"GET /metrics after use ({turns} streamed turns; {machine()}):")
    for name, (size, samples) in sizes.items():
        print(f"  {name:9s} {size:7d} bytes, {samples:4d} samples")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--dump", help="a folder to write each page into")
    args = parser.parse_args()
    report(asyncio.run(main(args.turns, args.dump)), args.turns)

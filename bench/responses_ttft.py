"""Time to first token added by ``/v1/responses`` beside ``/v1/chat/completions``.

    uv run python -m bench.responses_ttft [--samples 40]

The same server and conditions as ``bench.chat``: identity, agents, chat and the gateway
as separate uvicorn processes (one worker each) on embedded Postgres and NATS; a local
OpenAI-compatible server (its own process) answers with a fixed time to first token
(50 ms) and then 20 tokens. Each round sends the same one-message prompt three ways, in
turn: to that server directly, through the gateway to ``/v1/chat/completions``, and
through the gateway to ``/v1/responses`` (stored, the default, and with ``store: false``).
The figures are the p50
and p95 of each path minus the direct call's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys

import aiohttp

from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY
from bench.chat import SERVICES, TTFT, first_token_ms
from bench.gateway import spawn, wait_ready
from bench.servers import machine, percentile, servers

PATHS = ("direct", "chat_completions", "responses", "responses_unstored")


def environment(database_url: str, nats_url: str, base: dict[str, str]) -> dict[str, str]:
    unlimited = {"rate_limit": {"rate": 1e9, "burst": 10**9}}
    groups = ("auth", "identity", "agents", "knowledge", "chat", "chat_runs")
    return dict(
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
        GATEWAY_GROUPS=json.dumps({group: unlimited for group in groups}),
    )


async def agent(session: aiohttp.ClientSession, gw: str, llm_url: str) -> tuple[dict, str]:
    """A user's headers and an agent on the local server, once chat lists it as a model."""
    body = {
        "email": "responses-bench@example.com",
        "name": "Bench",
        "password": "correct horse battery staple",
    }
    await session.post(f"{gw}/api/v1/auth/register", json=body)
    async with session.post(f"{gw}/api/v1/auth/login", json=body) as response:
        headers = {"Authorization": f"Bearer {(await response.json())['access_token']}"}
    async with session.post(
        f"{gw}/api/v1/providers",
        headers=headers,
        json={"kind": "openai", "name": "fake", "base_url": llm_url, "api_key": "test-key"},
    ) as response:
        provider = (await response.json())["id"]
    config = {"name": "Bench", "provider_id": provider, "model": "fake-model"}
    async with session.post(f"{gw}/api/v1/agents", headers=headers, json=config) as response:
        agent_id = (await response.json())["id"]
    for _ in range(200):  # until chat's read-model has the agent
        async with session.get(f"{gw}/v1/models", headers=headers) as response:
            if agent_id in {m["id"] for m in (await response.json())["data"]}:
                return headers, agent_id
        await asyncio.sleep(0.05)
    raise RuntimeError("chat never saw the agent")


async def main(samples: int) -> dict[str, float]:
    async with servers() as (database_url, nats_url):
        llm = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_llm", str(TTFT), "0.002"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        llm_url = llm.stdout.readline().decode().strip()  # type: ignore[union-attr]
        ports = {name: free_port() for name in SERVICES}
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env = environment(database_url, nats_url, base)
        processes = [
            spawn(f"agentmesh.{name}.app:create_app", ports[name], env) for name in SERVICES
        ]
        paths: dict[str, list[float]] = {name: [] for name in PATHS}
        try:
            for name in SERVICES:
                await wait_ready(f"{base[name]}/health/ready", 120)
            gw = base["gateway"]
            connector = aiohttp.TCPConnector(limit=100)
            timeout = aiohttp.ClientTimeout(total=300)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                headers, agent_id = await agent(session, gw, llm_url)
                message = [{"role": "user", "content": "hi"}]
                calls = {
                    "direct": (
                        f"{llm_url}/chat/completions",
                        {"Authorization": "Bearer test-key"},
                        {"model": "fake-model", "stream": True, "messages": message},
                    ),
                    "chat_completions": (
                        f"{gw}/v1/chat/completions",
                        headers,
                        {"model": agent_id, "stream": True, "messages": message},
                    ),
                    "responses": (
                        f"{gw}/v1/responses",
                        headers,
                        {"model": agent_id, "stream": True, "input": message},
                    ),
                    "responses_unstored": (
                        f"{gw}/v1/responses",
                        headers,
                        {"model": agent_id, "stream": True, "input": message, "store": False},
                    ),
                }
                for round in range(5 + samples):  # 5 rounds of warm-up
                    for path, (url, auth, body) in calls.items():
                        ms = await first_token_ms(session, url, body, auth, b"token0")
                        if round >= 5:
                            paths[path].append(ms)
        finally:
            for process in [*processes, llm]:
                process.terminate()
                process.wait(10)
    figures: dict[str, float] = {"direct_ttft_p50_ms": percentile(paths["direct"], 50)}
    for path in PATHS[1:]:
        for q in (50, 95):
            figures[f"{path}_added_ttft_p{q}_ms"] = percentile(paths[path], q) - percentile(
                paths["direct"], q
            )
    print(f"/v1/responses beside /v1/chat/completions ({machine()}; 4 services, 1 worker each)")
    print(
        f"  provider: local OpenAI-compatible server, TTFT {TTFT * 1000:.0f} ms, 20 tokens; "
        f"{samples} rounds, one-message prompt, streamed"
    )
    print(f"  direct p50 {figures['direct_ttft_p50_ms']:.1f} ms")
    for path in PATHS[1:]:
        print(
            f"  {path}: added p50 {figures[f'{path}_added_ttft_p50_ms']:.1f} ms, "
            f"p95 {figures[f'{path}_added_ttft_p95_ms']:.1f} ms"
        )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40)
    asyncio.run(main(parser.parse_args().samples))

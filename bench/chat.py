"""Chat figures through the whole platform: added time to first token, concurrent
streams, and offline chat turns per second.

    uv run python -m bench.chat [--samples 40] [--duration 10]

identity, agents, chat and the gateway run as separate uvicorn processes (one worker
each) on embedded Postgres and NATS. A local OpenAI-compatible server (its own process)
answers with a fixed time to first token (50 ms) and then 20 tokens. Every client call
comes from this process over loopback. The conversation path's turns all go to one
conversation, which grows by two messages a turn (about 100 by the end); the direct call
it is compared with sends the same messages, so both prompts are equal.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time

import aiohttp

from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY
from bench.fake_llm import REPLY
from bench.gateway import spawn, wait_ready
from bench.servers import machine, percentile, servers

TTFT = 0.05
SERVICES = ("identity", "agents", "chat", "gateway")


async def first_token_ms(
    session: aiohttp.ClientSession, url: str, body: dict, headers: dict, marker: bytes
) -> float:
    """ms from sending the request to reading the first line containing ``marker``."""
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        first = None
        async for line in response.content:
            if first is None and marker in line:
                first = (time.perf_counter() - started) * 1000
        assert first is not None
        return first


async def concurrent_streams(session, url, headers, conversations: list[str], n: int):
    started = time.perf_counter()

    async def one(i: int) -> bool:
        body = {"content": f"stream {i}", "stream": True}
        async with session.post(
            f"{url}/api/v1/conversations/{conversations[i]}/messages", json=body, headers=headers
        ) as response:
            text = await response.text()
            return response.status == 200 and "event: done" in text and "run.failed" not in text

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    ok = sum(r is True for r in results)
    return ok, (time.perf_counter() - started)


async def turns_per_second(session, url, headers, conversations, duration: float, workers: int):
    done = errors = 0
    statuses: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + duration

    async def worker(i: int) -> None:
        nonlocal done, errors
        while time.monotonic() < deadline:
            try:
                async with session.post(
                    f"{url}/api/v1/conversations/{conversations[i]}/messages",
                    json={"content": "hello"},
                    headers=headers,
                ) as response:
                    body = await response.read()
                    done += response.status == 200
                    errors += response.status != 200
                    if response.status != 200:
                        statuses[f"{response.status} {body[:120]!r}"] += 1
            except aiohttp.ClientError as exc:
                errors += 1
                statuses[type(exc).__name__] += 1

    await asyncio.gather(*(worker(i) for i in range(workers)))
    for status, count in statuses.most_common(5):
        print(f"    {count} x {status}")
    return done / duration, errors


async def main(samples: int, duration: int) -> dict[str, float]:
    async with servers() as (database_url, nats_url):
        llm = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_llm", str(TTFT), "0.002"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        llm_url = llm.stdout.readline().decode().strip()  # type: ignore[union-attr]
        ports = {name: free_port() for name in SERVICES}
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
        processes = [
            spawn(f"agentmesh.{name}.app:create_app", ports[name], env) for name in SERVICES
        ]
        try:
            for name in SERVICES:
                await wait_ready(f"{base[name]}/health/ready", 120)
            gw = base["gateway"]
            connector = aiohttp.TCPConnector(limit=1000)
            timeout = aiohttp.ClientTimeout(total=300)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                body = {
                    "email": "chat-bench@example.com",
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
                    json={
                        "kind": "openai",
                        "name": "fake",
                        "base_url": llm_url,
                        "api_key": "test-key",
                    },
                ) as response:
                    provider = (await response.json())["id"]
                agents = {}
                for label, extra in (
                    ("remote", {"provider_id": provider, "model": "fake-model"}),
                    ("offline", {"model": "offline"}),
                ):
                    async with session.post(
                        f"{gw}/api/v1/agents",
                        headers=headers,
                        json={"name": f"Bench {label}", **extra},
                    ) as r:
                        agents[label] = (await r.json())["id"]

                async def conversation(agent: str) -> str:
                    for _ in range(200):  # until chat's read-model has the agent
                        async with session.post(
                            f"{gw}/api/v1/conversations",
                            headers=headers,
                            json={"agent_id": agent, "title": "b"},
                        ) as r:
                            if r.status == 201:
                                return (await r.json())["id"]
                        await asyncio.sleep(0.05)
                    raise RuntimeError("chat never saw the agent")

                remote = await conversation(agents["remote"])
                llm_body = {
                    "model": "fake-model",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                llm_headers = {"Authorization": "Bearer test-key"}
                turn = {"content": "hi", "stream": True}
                url = f"{gw}/api/v1/conversations/{remote}/messages"
                # The direct call sends what chat sends: the conversation so far, then the
                # new question (the agent has no instructions), so both prompts are equal.
                said: list[dict] = []

                async def both() -> tuple[float, float]:
                    body = {**llm_body, "messages": [*said, *llm_body["messages"]]}
                    alone = await first_token_ms(
                        session, f"{llm_url}/chat/completions", body, llm_headers, b"token0"
                    )
                    through = await first_token_ms(session, url, turn, headers, b"token0")
                    said.extend(
                        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": REPLY}]
                    )
                    return alone, through

                for _ in range(5):  # warm up
                    await both()
                direct, platform = [], []
                for _ in range(samples):
                    alone, through = await both()
                    direct.append(alone)
                    platform.append(through)
                openai_path, openai_direct = [], []
                models = f"{gw}/v1/chat/completions"
                oa_body = {
                    "model": agents["remote"],
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                try:
                    for _ in range(samples):  # the same one-message prompt both ways
                        openai_direct.append(
                            await first_token_ms(
                                session,
                                f"{llm_url}/chat/completions",
                                llm_body,
                                llm_headers,
                                b"token0",
                            )
                        )
                        openai_path.append(
                            await first_token_ms(session, models, oa_body, headers, b"token0")
                        )
                except AssertionError:
                    openai_path = []
                streams = {}
                print(
                    f"  TTFT p50: direct {percentile(direct, 50):.1f} ms, platform "
                    f"{percentile(platform, 50):.1f} ms",
                    flush=True,
                )
                for n in (50, 100, 200):
                    convs = [await conversation(agents["remote"]) for _ in range(n)]
                    streams[n] = await concurrent_streams(session, gw, headers, convs, n)
                    print(f"  {n} streams: {streams[n]}", flush=True)
                offline = [await conversation(agents["offline"]) for _ in range(16)]
                tps, errors = await turns_per_second(session, gw, headers, offline, duration, 16)
        finally:
            for process in [*processes, llm]:
                process.terminate()
                process.wait(10)
    figures = {
        "direct_ttft_p50_ms": percentile(direct, 50),
        "platform_ttft_p50_ms": percentile(platform, 50),
        "added_ttft_p50_ms": percentile(platform, 50) - percentile(direct, 50),
        "added_ttft_p95_ms": percentile(platform, 95) - percentile(direct, 95),
        "offline_turns_per_second": tps,
        "offline_errors": errors,
        "streams": {
            n: {"completed": ok, "seconds": seconds} for n, (ok, seconds) in streams.items()
        },
    }
    if openai_path:
        figures["openai_added_ttft_p50_ms"] = percentile(openai_path, 50) - percentile(
            openai_direct, 50
        )
        figures["openai_added_ttft_p95_ms"] = percentile(openai_path, 95) - percentile(
            openai_direct, 95
        )
    print(f"chat through the platform ({machine()}; 4 services, 1 uvicorn worker each)")
    print(f"  provider: local OpenAI-compatible server, TTFT {TTFT * 1000:.0f} ms, 20 tokens")
    print(
        f"  time to first token, {samples} sequential turns: direct p50 "
        f"{figures['direct_ttft_p50_ms']:.1f} ms; gateway + chat p50 "
        f"{figures['platform_ttft_p50_ms']:.1f} ms; added p50 "
        f"{figures['added_ttft_p50_ms']:.1f} ms, p95 {figures['added_ttft_p95_ms']:.1f} ms"
    )
    if openai_path:
        print(
            f"  OpenAI-compatible path (/v1/chat/completions, one message): added p50 "
            f"{figures['openai_added_ttft_p50_ms']:.1f} ms, p95 "
            f"{figures['openai_added_ttft_p95_ms']:.1f} ms"
        )
    for n, (ok, seconds) in streams.items():
        print(f"  {n} concurrent streams: {ok}/{n} completed in {seconds:.1f} s")
    print(
        f"  offline chat turns through the gateway, 16 concurrent, {duration}s: "
        f"{tps:.1f} turns/s, {errors} errors"
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.duration))

"""What the guarded outbound client adds per request (address check, pinning).

    uv run python -m bench.outbound_guard [--requests 300]

A plain ``httpx2.AsyncClient`` and ``outbound.async_client2`` (keep-alive, the way model
SDKs get it) GET ``/v1/models`` of the local OpenAI-compatible server, one at a time,
alternately measured; the base URL is an IP literal, as a name would add the resolver.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx2

from agentmesh.shared import outbound
from agentmesh.shared.outbound import OutboundPolicy
from agentmesh.shared.testing.openai_server import FakeOpenAI
from bench.servers import machine


async def _latencies(client: httpx2.AsyncClient, url: str, headers: dict, n: int) -> list[float]:
    for _ in range(20):  # warm the connection
        await client.get(url, headers=headers)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await client.get(url, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def main(requests: int) -> None:
    async with FakeOpenAI() as fake:
        url, headers = f"{fake.base_url}/models", {"Authorization": f"Bearer {fake.api_key}"}
        policy = OutboundPolicy(allowed_private=(httpx2.URL(fake.base_url).netloc.decode(),))
        results: dict[str, list[float]] = {"plain httpx2": [], "guarded (outbound)": []}
        for _round in range(3):
            for name in results:
                guarded = name.startswith("guarded")
                client = (
                    outbound.async_client2(policy, keepalive=True)
                    if guarded
                    else (httpx2.AsyncClient())
                )
                async with client:
                    results[name] += await _latencies(client, url, headers, requests)
    print(f"outbound guard, {requests * 3} sequential GETs each ({machine()})")
    for name, times in results.items():
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(f"  {name:20} median {statistics.median(times):.3f} ms  p95 {p95:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))

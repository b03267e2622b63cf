"""httpx.AsyncClient vs aiohttp as the gateway's upstream client (encode/httpx#3215).

    uv run python -m bench.upstream_clients [--requests 3000] [--concurrency 64]

Both clients GET a tiny Starlette endpoint served by uvicorn in another process.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time

import aiohttp
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentmesh.shared.local.ports import free_port, wait_for_port
from bench.servers import machine


async def _hello(request: object) -> JSONResponse:
    return JSONResponse({"ok": True})


def _serve(port: int) -> None:
    app = Starlette(routes=[Route("/x", _hello)])
    uvicorn.run(app, port=port, log_level="error")


async def _load(kind: str, url: str, requests: int, concurrency: int) -> tuple[float, float]:
    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)
    if kind == "httpx":
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        client = httpx.AsyncClient(limits=limits)

        async def one() -> None:
            started = time.perf_counter()
            (await client.get(url)).read()
            latencies.append(time.perf_counter() - started)

    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

        async def one() -> None:
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)

    async def guarded() -> None:
        async with limit:
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(guarded() for _ in range(requests)))
    elapsed = time.perf_counter() - started
    if kind == "httpx":
        await client.aclose()
    else:
        await session.close()
    return requests / elapsed, statistics.median(latencies) * 1000


def main(requests: int, concurrency: int) -> dict[str, float]:
    port = free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    wait_for_port("127.0.0.1", port)
    figures: dict[str, float] = {}
    try:
        for kind in ("httpx", "aiohttp", "httpx", "aiohttp"):
            rps, p50 = asyncio.run(_load(kind, f"http://127.0.0.1:{port}/x", requests, concurrency))
            figures[f"{kind}_rps"] = max(figures.get(f"{kind}_rps", 0), rps)
            figures[f"{kind}_p50_ms"] = p50
    finally:
        server.terminate()
    print(f"upstream client under load ({machine()}; {requests} GETs, {concurrency} at once)")
    for kind in ("httpx", "aiohttp"):
        rps, p50 = figures[f"{kind}_rps"], figures[f"{kind}_p50_ms"]
        print(f"  {kind:8s} {rps:7.0f} req/s, p50 {p50:.1f} ms")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    main(args.requests, args.concurrency)

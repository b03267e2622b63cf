"""What the shared rate limiter adds per request over the per-replica one.

    uv run python -m bench.shared_limits [--requests 2000] [--pace-ms 1]

Times one admission decision (``take``) as the gateway makes it for an API-key request (the
key's bucket and its user's), in one process against an embedded NATS on loopback:

- per replica: ``RateLimiter`` (a dict, no I/O);
- shared, one hot client: the same keys every time (writes to KV coalesce);
- shared, many clients: 500 users in turn (about one KV write per key and request);
- shared, two replicas on the same keys (two NATS connections): writes conflict and
  re-read the key;
- shared, batch 1: the same, allowed only one unconfirmed admission per key, so a
  request often waits for the previous one's write.

Decisions come one every ``--pace-ms`` (1 ms: 1000 requests/s, about what one gateway
worker serves). ``take()`` latency is the request's wait; the store writes run in the
background on the same event loop, so "CPU per decision" (this process's CPU time over
the run, writes included, divided by the decisions) is their cost. The limit is high
enough that every request is admitted. Scenarios alternate in rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats
from prometheus_client import REGISTRY

from agentmesh.gateway.ratelimit import RateLimiter
from agentmesh.gateway.settings import RateLimit
from agentmesh.gateway.shared_limits import SharedLimits
from agentmesh.shared.local.nats import EmbeddedNats
from agentmesh.shared.local.ports import free_port
from bench.servers import machine, percentile

LIMIT = RateLimit(rate=1e6, burst=10**7)
USERS = 500
ALL: list[SharedLimits] = []


async def _times(take, n: int, pace: float) -> tuple[list[float], float]:
    """Latencies of ``n`` decisions ``pace`` seconds apart (ms), and the CPU this process
    spent per decision, background writes to the store included (ms)."""
    times = []
    cpu = time.process_time()
    for i in range(n):
        started = time.perf_counter()
        decision = await take(i)
        times.append((time.perf_counter() - started) * 1000)
        assert decision.allowed
        await asyncio.sleep(pace)  # the writes run meanwhile, as between requests
    for limits in ALL:
        while limits._tasks:
            await asyncio.wait(set(limits._tasks))
    return times, (time.process_time() - cpu) * 1000 / n


def keys(i: int) -> tuple[str, str]:
    return (f"key:k{i % USERS}", f"user:u{i % USERS}")


async def main(requests: int, pace: float, rounds: int = 3) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "nats", free_port())
        server.start()
        connections = [await nats.connect(server.url) for _ in range(2)]
        try:
            streams = [c.jetstream() for c in connections]
            local = RateLimiter()

            def shared(js, batch: int = 4) -> SharedLimits:
                limits = SharedLimits(lambda: js, RateLimiter(), scope="bench", batch=batch)
                ALL.append(limits)
                return limits

            hot, many, single = shared(streams[0]), shared(streams[0]), shared(streams[0], 1)
            pair = [shared(streams[0]), shared(streams[1])]
            hot_keys = ("key:hot", "user:hot")
            scenarios = {
                "per replica": lambda i: _now(local.take("chat", hot_keys, LIMIT)),
                "shared, one hot client": lambda i: hot.take("hot", hot_keys, LIMIT),
                "shared, 500 clients": lambda i: many.take("many", keys(i), LIMIT),
                "shared, 2 replicas": lambda i: pair[i % 2].take("pair", hot_keys, LIMIT),
                "shared, 2 replicas, batch 1": lambda i: (
                    single.take("one", hot_keys, LIMIT)
                    if i % 2
                    else pair[0].take("one", hot_keys, LIMIT)
                ),
            }
            stores = {
                "shared, one hot client": [hot],
                "shared, 500 clients": [many],
                "shared, 2 replicas": pair,
                "shared, 2 replicas, batch 1": [single, pair[0]],
            }
            results: dict[str, list[float]] = {name: [] for name in scenarios}
            all_in: dict[str, list[float]] = {name: [] for name in scenarios}
            for take in scenarios.values():  # warm: bucket, connections, code paths
                await _times(take, 50, pace)
            trips_before = {n: sum(s.round_trips for s in st) for n, st in stores.items()}
            for _ in range(rounds):
                for name, take in scenarios.items():
                    times, per = await _times(take, requests, pace)
                    results[name] += times
                    all_in[name].append(per)
            trips = {
                n: (sum(s.round_trips for s in st) - trips_before[n]) / (requests * rounds)
                for n, st in stores.items()
            }
        finally:
            for connection in connections:
                await connection.close()
            server.stop()
    fallbacks = REGISTRY.get_sample_value("agentmesh_gateway_limits_fallbacks_total") or 0
    base = statistics.median(results["per replica"])
    base_p99 = percentile(results["per replica"], 99)
    print(f"shared rate limits: take() for an API-key request, 2 buckets ({machine()})")
    print(
        f"  {requests * rounds} decisions per scenario in {rounds} rounds, one every "
        f"{pace * 1000:g} ms; NATS on loopback"
    )
    figures = {}
    for name, times in results.items():
        p50, p99 = statistics.median(times), percentile(times, 99)
        per = statistics.median(all_in[name])
        figures[name] = {
            "p50_ms": p50,
            "p99_ms": p99,
            "all_in_ms": per,
            "store_ops_per_request": trips.get(name, 0.0),
        }
        print(
            f"  {name:28} take() median {p50 * 1000:.0f} us, p99 {p99 * 1000:.0f} us "
            f"(x{p50 / base:.1f}, x{p99 / base_p99:.1f} per replica); CPU per decision "
            f"{per * 1000:.0f} us; {trips.get(name, 0.0):.2f} KV ops/request"
        )
    # A store operation over the 0.5 s timeout (a very busy machine) makes a replica decide
    # alone for a second: those decisions are then local, and the figures flattered.
    print(f"  fallbacks to per-replica limits during the run: {fallbacks:.0f}")
    return figures


async def _now(value):
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--pace-ms", type=float, default=1.0, help="between decisions")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.pace_ms / 1000))

"""Gateway overhead: throughput ratio and added latency versus calling the service
directly, plus how long a streamed token waits in the gateway.

    uv run python -m bench.gateway [--duration 10] [--connections 32]

identity and the gateway run as separate uvicorn processes (one worker each) on embedded
Postgres and NATS; the load comes from another process on loopback: wrk when installed
(apt-get install wrk), else a Python aiohttp client. Endpoint: GET /api/v1/users/me with
a bearer token (JWT verified at the gateway and again at identity, one DB read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from agentmesh.shared.local.ports import free_port, wait_for_port
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY
from bench.servers import machine, percentile, servers

STANDIN = Path(__file__).with_name("sse_standin.py")


def spawn(module: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A service process; its output goes to ``$TMPDIR/agentmesh-bench-<service>.log``."""
    log = Path(tempfile.gettempdir()) / f"agentmesh-bench-{module.split('.')[1]}.log"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            module,
            "--factory",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


async def wait_ready(url: str, seconds: float = 30) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(seconds * 10)):
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


def wrk(url: str, token: str, connections: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "errors": int(non2xx.group(1)) if non2xx else 0,
    }


async def python_load(url: str, token: str, connections: int, duration: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with s.get(url, headers=headers) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(connections)))
    return {
        "rps": len(latencies) / duration,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": errors,
    }


async def load(url: str, token: str, connections: int, duration: int) -> dict[str, float]:
    if shutil.which("wrk"):
        return await asyncio.to_thread(wrk, url, token, connections, duration)
    # Run the Python generator in its own process, as wrk would be.
    code = (
        f"import asyncio, json; from bench.gateway import python_load; print(json.dumps("
        f"asyncio.run(python_load({url!r}, {token!r}, {connections}, {duration}))))"
    )
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def stream_delays(url: str, token: str, events: int = 40) -> list[float]:
    """Per event: ms between the upstream writing it and the client reading it."""
    delays = []
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url, headers={"Authorization": f"Bearer {token}"}, params={"events": events}
        ) as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    sent = float(line[6:].strip())
                    delays.append((time.time() - sent) * 1000)
    return delays


async def main(duration: int, connections: int) -> dict[str, float]:
    async with servers() as (database_url, nats_url):
        env = dict(
            os.environ,
            AGENTMESH_ENV="production",
            AGENTMESH_DATABASE_URL=database_url,
            AGENTMESH_NATS_URL=nats_url,
            AGENTMESH_LOG_LEVEL="WARNING",
            AGENTMESH_INTERNAL_TOKEN=TEST_INTERNAL_TOKEN,
            IDENTITY_KEY_ENCRYPTION_KEY=TEST_KEY_ENCRYPTION_KEY,
        )
        ports = {name: free_port() for name in ("identity", "gateway", "standin")}
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env["AGENTMESH_JWKS_URL"] = f"{base['identity']}/.well-known/jwks.json"
        env.update(
            GATEWAY_IDENTITY_URL=base["identity"],
            GATEWAY_CHAT_URL=base["standin"],
            GATEWAY_AGENTS_URL=base["standin"],
            GATEWAY_GROUPS=json.dumps(
                {g: {"rate_limit": {"rate": 1e9, "burst": 10**9}} for g in ("identity", "chat")}
            ),
        )
        processes = [
            spawn("agentmesh.identity.app:create_app", ports["identity"], env),
            subprocess.Popen(
                [sys.executable, str(STANDIN), str(ports["standin"])],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            spawn("agentmesh.gateway.app:create_app", ports["gateway"], env),
        ]
        try:
            wait_for_port("127.0.0.1", ports["standin"], 30)
            await wait_ready(f"{base['gateway']}/health/live")
            await wait_ready(f"{base['identity']}/health/ready")
            async with aiohttp.ClientSession() as session:
                body = {
                    "email": "bench@example.com",
                    "password": "correct horse battery staple",
                    "name": "Bench",
                }
                await session.post(f"{base['identity']}/api/v1/auth/register", json=body)
                async with session.post(
                    f"{base['identity']}/api/v1/auth/login", json=body
                ) as response:
                    token = (await response.json())["access_token"]
            path = "/api/v1/users/me"
            await load(base["gateway"] + path, token, 4, 2)  # warm both paths
            results = {}
            for label, conns in (("serial", 1), ("loaded", connections)):
                direct = await load(base["identity"] + path, token, conns, duration)
                via = await load(base["gateway"] + path, token, conns, duration)
                results[label] = (direct, via)
            direct_stream = await stream_delays(f"{base['standin']}/api/v1/conversations/s", token)
            via_stream = await stream_delays(f"{base['gateway']}/api/v1/conversations/s", token)
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    serial_direct, serial_via = results["serial"]
    loaded_direct, loaded_via = results["loaded"]
    figures = {
        "throughput_ratio": loaded_via["rps"] / loaded_direct["rps"],
        "direct_rps": loaded_direct["rps"],
        "gateway_rps": loaded_via["rps"],
        "added_p50_ms": serial_via["p50_ms"] - serial_direct["p50_ms"],
        "added_p99_ms": serial_via["p99_ms"] - serial_direct["p99_ms"],
        "loaded_added_p50_ms": loaded_via["p50_ms"] - loaded_direct["p50_ms"],
        "stream_delay_direct_p50_ms": percentile(direct_stream, 50),
        "stream_delay_gateway_p50_ms": percentile(via_stream, 50),
        "stream_delay_gateway_p99_ms": percentile(via_stream, 99),
        "errors": loaded_via["errors"] + loaded_direct["errors"],
    }
    tool = "wrk" if shutil.which("wrk") else "python aiohttp"
    print(f"gateway overhead ({machine()}; load: {tool}, another process, loopback)")
    print("  GET /api/v1/users/me with a JWT; identity and gateway 1 uvicorn worker each")
    print(
        f"  throughput at {connections} connections, {duration}s: direct "
        f"{loaded_direct['rps']:.0f} req/s, via gateway {loaded_via['rps']:.0f} req/s, "
        f"ratio {figures['throughput_ratio']:.2f}"
    )
    print(
        f"  latency, 1 connection: direct p50 {serial_direct['p50_ms']:.2f} ms / p99 "
        f"{serial_direct['p99_ms']:.2f} ms; via gateway p50 {serial_via['p50_ms']:.2f} ms / "
        f"p99 {serial_via['p99_ms']:.2f} ms; added p50 {figures['added_p50_ms']:.2f} ms, "
        f"p99 {figures['added_p99_ms']:.2f} ms"
    )
    print(
        f"  latency at {connections} connections: added p50 {figures['loaded_added_p50_ms']:.2f} ms"
    )
    print(
        f"  SSE token, upstream write -> client read: direct p50 "
        f"{figures['stream_delay_direct_p50_ms']:.2f} ms, via gateway p50 "
        f"{figures['stream_delay_gateway_p50_ms']:.2f} ms, p99 "
        f"{figures['stream_delay_gateway_p99_ms']:.2f} ms; non-2xx: {figures['errors']}"
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.duration, args.connections))

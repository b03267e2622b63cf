"""The read path against a bare FastAPI app: issue 18's read-path ratios.

    uv run python -m bench.read_path [--duration 5] [--connections 32]
    uv run python -m bench.read_path --profile agents   # cProfile of one service under load

The four services run as ``make up`` starts them (one uvicorn worker each, development
settings, INFO logs with the access log; only the gateway's rate limits are lifted, or
the load would measure the 429s). A bare FastAPI app (``bare_app``) answers each path
with the JSON body captured from the real response (parsed once, serialized per request
by ``JSONResponse``, as a minimal FastAPI handler does). The same load generator (wrk when
installed, else an aiohttp client in another process) drives, in one run, each path
through the gateway, directly at its service, and at the bare app; the figure is
``gateway rps / bare rps``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from agentmesh.shared.local.ports import free_port, wait_for_port
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY
from bench.gateway import load, spawn, wait_ready
from bench.servers import machine, servers

SERVICES = ("identity", "agents", "chat", "gateway")
#: (label, upstream service, path template); ``{agent}``/``{conversation}`` filled at run.
PATHS = (
    ("GET /api/v1/agents?limit=20", "agents", "/api/v1/agents?limit=20"),
    ("GET /api/v1/agents/{id}", "agents", "/api/v1/agents/{agent}"),
    ("GET /api/v1/users/me", "identity", "/api/v1/users/me"),
    ("GET /api/v1/conversations?limit=20", "chat", "/api/v1/conversations?limit=20"),
    (
        "GET /api/v1/conversations/{id}/messages",
        "chat",
        "/api/v1/conversations/{conversation}/messages",
    ),
)
TARGET = 0.25


def bare_app(bodies: dict[str, Any]) -> Any:
    """A FastAPI app with one route per path, answering its captured body."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    for path, body in bodies.items():

        async def handler(body: Any = body) -> JSONResponse:
            return JSONResponse(body)

        app.add_api_route(path.split("?")[0], handler, methods=["GET"])
    return app


def _env(database_url: str, nats_url: str, ports: dict[str, int]) -> dict[str, str]:
    unlimited = {"rate_limit": {"rate": 1e9, "burst": 10**9}}
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    return dict(
        os.environ,
        AGENTMESH_ENV="development",
        AGENTMESH_DATABASE_URL=database_url,
        AGENTMESH_NATS_URL=nats_url,
        AGENTMESH_INTERNAL_TOKEN=TEST_INTERNAL_TOKEN,
        IDENTITY_KEY_ENCRYPTION_KEY=TEST_KEY_ENCRYPTION_KEY,
        AGENTS_PROVIDER_ENCRYPTION_KEY=TEST_KEY_ENCRYPTION_KEY,
        AGENTMESH_JWKS_URL=f"{base['identity']}/.well-known/jwks.json",
        GATEWAY_IDENTITY_URL=base["identity"],
        GATEWAY_AGENTS_URL=base["agents"],
        GATEWAY_CHAT_URL=base["chat"],
        GATEWAY_GROUPS=json.dumps(
            {g: unlimited for g in ("auth", "identity", "agents", "chat", "chat_runs")}
        ),
    )


PROFILED = """
import cProfile, signal, sys, uvicorn
profile = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: (profile.disable(), profile.dump_stats(sys.argv[2])))
uvicorn.run(sys.argv[1], factory=True, port=int(sys.argv[3]), log_level="warning",
            access_log=False)
"""


def _spawn_profiled(module: str, port: int, env: dict[str, str], out: Path) -> Any:
    """The service under cProfile, on only between SIGUSR1 and SIGUSR2 (which dumps to
    ``out``): start-up and seeding stay out of the profile."""
    log = Path(tempfile.gettempdir()) / f"agentmesh-bench-{module.split('.')[1]}.log"
    return subprocess.Popen(
        [sys.executable, "-c", PROFILED, module, str(out), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


async def _seed(gateway: str) -> tuple[str, str, str]:
    """A user with 20 agents, 20 conversations, 10 turns in one: (token, agent, conversation)."""
    async with aiohttp.ClientSession(base_url=gateway) as s:
        body = {
            "email": "reader@example.com",
            "password": "correct horse battery staple",
            "name": "Reader",
        }
        async with s.post("/api/v1/auth/register", json=body) as r:
            assert r.status == 201, await r.text()
        async with s.post("/api/v1/auth/login", json=body) as r:
            token = (await r.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        agents = []
        for i in range(20):
            spec = {
                "name": f"Reader {i}",
                "instructions": "Answer briefly.",
                "model": "offline",
                "tags": ["bench"],
                "description": "An agent of the read-path bench",
            }
            async with s.post("/api/v1/agents", json=spec, headers=auth) as r:
                assert r.status == 201, await r.text()
                agents.append((await r.json())["id"])
        conversations = []
        for i in range(20):
            spec = {"agent_id": agents[i % len(agents)], "title": f"Talk {i}"}
            async with s.post("/api/v1/conversations", json=spec, headers=auth) as r:
                assert r.status == 201, await r.text()
                conversations.append((await r.json())["id"])
        for i in range(10):
            turn = {"content": f"Hello number {i}", "stream": False}
            async with s.post(
                f"/api/v1/conversations/{conversations[0]}/messages", json=turn, headers=auth
            ) as r:
                assert r.status in (200, 201), await r.text()
    return token, agents[0], conversations[0]


async def _capture(gateway: str, token: str, paths: list[str]) -> dict[str, Any]:
    bodies = {}
    async with aiohttp.ClientSession(base_url=gateway) as s:
        for path in paths:
            async with s.get(path, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200, await r.text()
                bodies[path] = await r.json()
    return bodies


async def _measured(
    cpu: dict[str, Any], url: str, token: str, connections: int, duration: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The load's figures, and each process's CPU milliseconds per request it served: a
    figure the other tenants of a shared machine disturb far less than throughput."""

    def seconds() -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in cpu.items()}

    before = seconds()
    result = await load(url, token, connections, duration)
    after = seconds()
    requests = max(1.0, result["rps"] * duration)
    return result, {name: (after[name] - before[name]) / requests * 1000 for name in cpu}


async def main(duration: int, connections: int, profile: str | None = None) -> dict[str, Any]:
    async with servers() as (database_url, nats_url):
        ports = {name: free_port() for name in (*SERVICES, "bare")}
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env = _env(database_url, nats_url, ports)
        prof = Path(tempfile.gettempdir()) / f"agentmesh-read-path-{profile}.prof"
        processes = {
            name: _spawn_profiled(f"agentmesh.{name}.app:create_app", ports[name], env, prof)
            if name == profile
            else spawn(f"agentmesh.{name}.app:create_app", ports[name], env)
            for name in SERVICES
        }
        bare: subprocess.Popen[bytes] | None = None
        results: dict[str, dict[str, Any]] = {}
        try:
            for name in SERVICES:
                await wait_ready(f"{base[name]}/health/ready", 120)
            token, agent, conversation = await _seed(base["gateway"])
            paths = [
                (label, service, template.format(agent=agent, conversation=conversation))
                for label, service, template in PATHS
            ]
            if profile:
                return await _profile(
                    processes[profile], profile, paths, base, token, connections, duration
                )
            bodies = await _capture(base["gateway"], token, [p for _, _, p in paths])
            spec = Path(tempfile.mkdtemp(prefix="agentmesh-bare-")) / "bodies.json"
            spec.write_text(json.dumps(bodies))
            bare = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.read_path",
                    "--serve-bare",
                    str(spec),
                    "--port",
                    str(ports["bare"]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_port("127.0.0.1", ports["bare"], 30)
            for _label, service, path in paths:
                await load(base["gateway"] + path, token, 4, 1)  # warm every path
                await load(base[service] + path, token, 4, 1)
            cpu = {name: psutil.Process(p.pid) for name, p in processes.items()}
            cpu["bare"] = psutil.Process(bare.pid)
            for label, service, path in paths:
                via, spent = await _measured(
                    cpu, base["gateway"] + path, token, connections, duration
                )
                direct, _ = await _measured(cpu, base[service] + path, token, connections, duration)
                plain, bare_spent = await _measured(
                    cpu, base["bare"] + path, token, connections, duration
                )
                results[label] = {
                    "gateway": via,
                    "direct": direct,
                    "bare": plain,
                    "ratio": via["rps"] / plain["rps"],
                    "bytes": len(json.dumps(bodies[path])),
                    "cpu_ms": {
                        "gateway": spent["gateway"],
                        service: spent[service],
                        "bare": bare_spent["bare"],
                    },
                }
        finally:
            if bare is not None:
                bare.terminate()
                bare.wait(10)
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                process.wait(30)
    tool = "wrk" if shutil.which("wrk") else "python aiohttp"
    print(
        f"read path ({machine()}; load: {tool} in another process, {connections} "
        f"connections, {duration} s per target, loopback; four services 1 uvicorn worker "
        "each as make up starts them, development settings, INFO logs)"
    )
    print(
        f"  {'path':42} {'gateway':>9} {'direct':>9} {'bare':>9} {'ratio':>6}   CPU ms per "
        "request through the gateway (gateway + service; bare)"
    )
    for label, r in results.items():
        errors = r["gateway"]["errors"] + r["direct"]["errors"] + r["bare"]["errors"]
        spent = " + ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms"].items() if k != "bare")
        print(
            f"  {label:42} {r['gateway']['rps']:7.0f}/s {r['direct']['rps']:7.0f}/s "
            f"{r['bare']['rps']:7.0f}/s {r['ratio']:6.3f}   {spent}; bare "
            f"{r['cpu_ms']['bare']:.2f}" + (f"  ({errors} non-2xx)" if errors else "")
        )
    return results


#: Where a function's own time is counted, by the first matching fragment of its file.
GROUPS = (
    ("sqlalchemy", "sqlalchemy/"),
    ("asyncpg", "asyncpg/"),
    ("pydantic", "pydantic"),
    ("opentelemetry", "opentelemetry/"),
    ("fastapi", "fastapi/"),
    ("starlette", "starlette/"),
    ("uvicorn/httptools", "uvicorn/"),
    ("aiohttp", "aiohttp/"),
    ("logging", "logging/"),
    ("json", "json/"),
    ("agentmesh", "agentmesh/"),
    ("asyncio", "asyncio/"),
    ("prometheus", "prometheus_client/"),
    ("greenlet", "greenlet"),
    ("jwt", "jwt/"),
)


def _group(filename: str, name: str) -> str:
    for label, fragment in GROUPS:
        if fragment in filename or fragment in name:
            return label
    return "builtins" if filename == "~" else "other"


async def _profile(
    process: Any,
    service: str,
    paths: list[tuple[str, str, str]],
    base: dict[str, str],
    token: str,
    connections: int,
    duration: int,
) -> dict[str, Any]:
    """Each path that reaches ``service``, loaded through the gateway with the profiler
    on in ``service`` only: its own time per request, by package and by function."""
    out = Path(tempfile.gettempdir()) / f"agentmesh-read-path-{service}.prof"
    report: dict[str, Any] = {}
    for label, upstream, path in paths:
        if service not in (upstream, "gateway"):
            continue
        await load(base["gateway"] + path, token, 4, 1)
        out.unlink(missing_ok=True)
        process.send_signal(signal.SIGUSR1)
        result = await load(base["gateway"] + path, token, connections, duration)
        process.send_signal(signal.SIGUSR2)
        for _ in range(100):
            if out.exists() and out.stat().st_size:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stats = pstats.Stats(str(out))
        requests = result["rps"] * duration
        groups: dict[str, float] = {}
        functions = []
        for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            key = _group(filename, name)
            groups[key] = groups.get(key, 0.0) + tottime
            functions.append((tottime, f"{filename.split('site-packages/')[-1]}:{line}({name})"))
        total = sum(groups.values())
        print(
            f"\n{service}, {label} through the gateway: {result['rps']:.0f} req/s, "
            f"{total / requests * 1000:.2f} ms of {service} CPU per request (profiled)"
        )
        for key, value in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"  {key:20} {value / requests * 1000:6.3f} ms  {value / total:5.1%}")
        for tottime, where in sorted(functions, reverse=True)[:25]:
            print(f"    {tottime / requests * 1e6:7.1f} us  {where}")
        report[label] = {
            "rps": result["rps"],
            "ms_per_request": total / requests * 1000,
            "groups": {k: v / requests * 1000 for k, v in groups.items()},
        }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--profile", choices=SERVICES)
    parser.add_argument(
        "--write",
        action="store_true",
        help="put the figures into bench/results/latest.md and .json",
    )
    parser.add_argument("--serve-bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        import uvicorn

        app = bare_app(json.loads(args.serve_bare.read_text()))
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    else:
        results = asyncio.run(main(args.duration, args.connections, args.profile))
        if args.write and results and not args.profile:
            from bench import suite

            suite.merge(suite.read_path_rows(results))

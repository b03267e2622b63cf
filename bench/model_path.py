"""The model path beside LiteLLM's proxy: time to first token added by ``/v1/chat/completions``
(gateway + chat) and by LiteLLM, and streams completed per second at 32 concurrent, in one run.

    uv run python -m bench.model_path [--samples 40] [--duration 8] [--profile DIR]

Both forward to the same local OpenAI-compatible server (``bench.fake_llm``, its own
process: 50 ms to the first token, then 20 tokens 2 ms apart) and are driven by the same
aiohttp client in this process, over loopback. AgentMesh runs as ``bench.chat`` starts it
(identity, agents, chat and the gateway, one uvicorn worker each, embedded Postgres and
NATS). LiteLLM's proxy (``litellm[proxy]``, pinned below) is installed by this script into
a throwaway environment (``$TMPDIR/agentmesh-bench-litellm``, never the project's), and
runs as one process with one worker, a master key and no database, as its docs' minimal
proxy does. Each sequential round calls the server directly, then AgentMesh, then
LiteLLM; the added time is each path's p50 (p95) minus the direct call's. Then each peer
alone takes ``--duration`` seconds of 32 clients streaming in a closed loop.

``--profile DIR`` runs chat and the gateway under cProfile (``DIR/chat.prof``,
``DIR/gateway.prof``): read them with ``python -m pstats``. Profiled figures are slower.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from agentmesh.shared.local.ports import free_port
from bench.chat import SERVICES, TTFT, first_token_ms
from bench.gateway import wait_ready
from bench.responses_ttft import agent, environment
from bench.servers import machine, percentile, servers

LITELLM = "litellm[proxy]==1.108.7"
LITELLM_ENV = Path(tempfile.gettempdir()) / "agentmesh-bench-litellm"
MASTER_KEY = "sk-bench-master"
CONCURRENCY = 32


def litellm_binary() -> Path:
    """The proxy's executable in the throwaway environment, installed there when missing."""
    binary = LITELLM_ENV / "bin" / "litellm"
    if not binary.exists():
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run(["uv", "venv", "-q", "--python", python, str(LITELLM_ENV)], check=True)
        subprocess.run(
            [
                "uv",
                "pip",
                "install",
                "-q",
                "--python",
                str(LITELLM_ENV / "bin" / "python"),
                LITELLM,
            ],
            check=True,
        )
    return binary


def spawn_litellm(llm_url: str, port: int) -> subprocess.Popen[bytes]:
    config = Path(tempfile.mkdtemp(prefix="agentmesh-bench-litellm-")) / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake-model\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: {llm_url}\n"
        "      api_key: test-key\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )
    log = Path(tempfile.gettempdir()) / "agentmesh-bench-litellm.log"
    env = dict(
        os.environ,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        NO_DOCS="True",
    )
    return subprocess.Popen(
        [
            str(litellm_binary()),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def spawn_service(
    name: str, port: int, env: dict[str, str], profile: Path | None
) -> subprocess.Popen[bytes]:
    """As ``bench.gateway.spawn``; with ``profile``, chat and the gateway under cProfile,
    from SIGUSR2 (after the warm-up) to SIGUSR1, which writes it (uvicorn re-raises
    SIGTERM, which would end the process unwritten)."""
    log = Path(tempfile.gettempdir()) / f"agentmesh-bench-{name}.log"
    args = [
        f"agentmesh.{name}.app:create_app",
        "--factory",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if profile is None or name not in ("chat", "gateway"):
        command = [sys.executable, "-m", "uvicorn", *args]
    else:
        command = [sys.executable, "-c", PROFILED, str(profile / f"{name}.prof"), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


#: uvicorn's command line under cProfile: ``python -c PROFILED <out> <uvicorn args>``.
PROFILED = """
import cProfile, os, signal, sys, time
import uvicorn.main
out = sys.argv.pop(1)
profiler = cProfile.Profile(time.process_time)  # CPU time: the machine is shared
def dump(*_):
    profiler.disable()
    profiler.dump_stats(out)
    os._exit(0)
signal.signal(signal.SIGUSR1, dump)
signal.signal(signal.SIGUSR2, lambda *_: profiler.enable())
uvicorn.main.main(sys.argv[1:])
"""


async def stream_once(session: aiohttp.ClientSession, url: str, body: dict, headers: dict) -> bool:
    async with session.post(url, json=body, headers=headers) as response:
        text = await response.read()
        return response.status == 200 and b"[DONE]" in text and b"token19" in text


async def streams_per_second(
    session: aiohttp.ClientSession, url: str, body: dict, headers: dict, duration: float
) -> tuple[float, int]:
    """Completed streams per second of ``CONCURRENCY`` clients in a closed loop."""
    done = errors = 0
    deadline = time.monotonic() + duration

    async def client() -> None:
        nonlocal done, errors
        while time.monotonic() < deadline:
            try:
                ok = await stream_once(session, url, body, headers)
            except aiohttp.ClientError:
                ok = False
            done += ok
            errors += not ok

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return done / (time.monotonic() - started), errors


async def main(samples: int, duration: float, profile: Path | None = None) -> dict[str, float]:
    if profile is not None:
        await asyncio.to_thread(profile.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(litellm_binary)
    async with servers() as (database_url, nats_url):
        llm = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_llm", str(TTFT), "0.002"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        llm_url = llm.stdout.readline().decode().strip()  # type: ignore[union-attr]
        ports = {name: free_port() for name in (*SERVICES, "litellm")}
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env = environment(database_url, nats_url, base)
        processes = [spawn_service(name, ports[name], env, profile) for name in SERVICES]
        processes.append(spawn_litellm(llm_url, ports["litellm"]))
        paths: dict[str, list[float]] = {"direct": [], "agentmesh": [], "litellm": []}
        try:
            for name in SERVICES:
                await wait_ready(f"{base[name]}/health/ready", 120)
            await wait_ready(f"{base['litellm']}/health/liveliness", 180)
            connector = aiohttp.TCPConnector(limit=200)
            timeout = aiohttp.ClientTimeout(total=300)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                headers, agent_id = await agent(session, base["gateway"], llm_url)
                message = [{"role": "user", "content": "hi"}]
                body = {"model": "fake-model", "stream": True, "messages": message}
                calls = {
                    "direct": (
                        f"{llm_url}/chat/completions",
                        {"Authorization": "Bearer test-key"},
                        body,
                    ),
                    "agentmesh": (
                        f"{base['gateway']}/v1/chat/completions",
                        headers,
                        {**body, "model": agent_id},
                    ),
                    "litellm": (
                        f"{base['litellm']}/v1/chat/completions",
                        {"Authorization": f"Bearer {MASTER_KEY}"},
                        body,
                    ),
                }
                for round in range(5 + samples):  # 5 rounds of warm-up
                    if round == 5 and profile is not None:
                        for process in processes:
                            if "-c" in process.args:  # type: ignore[operator]
                                process.send_signal(signal.SIGUSR2)
                    for path, (url, auth, payload) in calls.items():
                        ms = await first_token_ms(session, url, payload, auth, b"token0")
                        if round >= 5:
                            paths[path].append(ms)
                throughput = {}
                for path in ("direct", "agentmesh", "litellm"):
                    url, auth, payload = calls[path]
                    throughput[path] = await streams_per_second(
                        session, url, payload, auth, duration
                    )
        finally:
            for process in [*processes, llm]:
                if profile is not None and "-c" in process.args:  # type: ignore[operator]
                    process.send_signal(signal.SIGUSR1)
                else:
                    process.terminate()
            for process in [*processes, llm]:
                process.wait(60)
    figures: dict[str, float] = {"direct_ttft_p50_ms": percentile(paths["direct"], 50)}
    for path in ("agentmesh", "litellm"):
        for q in (50, 95):
            figures[f"{path}_added_ttft_p{q}_ms"] = percentile(paths[path], q) - percentile(
                paths["direct"], q
            )
    for path, (rate, errors) in throughput.items():
        figures[f"{path}_streams_per_s"] = rate
        figures[f"{path}_stream_errors"] = errors
    figures["added_ttft_ratio"] = figures["agentmesh_added_ttft_p50_ms"] / max(
        figures["litellm_added_ttft_p50_ms"], 1e-9
    )
    figures["streams_ratio"] = figures["agentmesh_streams_per_s"] / max(
        figures["litellm_streams_per_s"], 1e-9
    )
    print(
        f"/v1/chat/completions beside LiteLLM's proxy ({machine()}; {LITELLM}, 1 worker; "
        "AgentMesh 4 services, 1 worker each)"
    )
    print(
        f"  upstream: local OpenAI-compatible server, TTFT {TTFT * 1000:.0f} ms, 20 tokens "
        f"2 ms apart; {samples} sequential rounds, one-message prompt, streamed"
    )
    print(f"  direct TTFT p50 {figures['direct_ttft_p50_ms']:.1f} ms")
    for path in ("agentmesh", "litellm"):
        print(
            f"  {path}: added TTFT p50 {figures[f'{path}_added_ttft_p50_ms']:.1f} ms, "
            f"p95 {figures[f'{path}_added_ttft_p95_ms']:.1f} ms"
        )
    print(f"  added TTFT p50, AgentMesh / LiteLLM: {figures['added_ttft_ratio']:.2f}")
    for path, (rate, errors) in throughput.items():
        print(
            f"  {path}: {rate:.1f} streams/s at {CONCURRENCY} concurrent, {duration:.0f} s, "
            f"{errors} errors"
        )
    print(f"  streams/s, AgentMesh / LiteLLM: {figures['streams_ratio']:.2f}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.duration, args.profile))

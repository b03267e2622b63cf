"""Every benchmark, one table: ``bench/run`` (= ``uv run python -m bench.suite``).

Writes ``bench/results/latest.md`` and ``bench/results/latest.json``: each figure with its
value, the target it is held to, and its conditions (machine, cores, data size,
concurrency) and the command that measures it alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY
from bench import (
    chat,
    event_propagation,
    gateway,
    identity_login,
    knowledge_ingest,
    knowledge_search,
    model_path,
    read_path,
)
from bench.gateway import spawn, wait_ready
from bench.servers import machine, servers

RESULTS = Path(__file__).with_name("results")
SERVICES = ("identity", "agents", "chat", "gateway")


async def idle_rss() -> dict[str, float]:
    """RSS (MiB) of each service, one uvicorn worker, 5 s after it became ready."""
    async with servers() as (database_url, nats_url):
        ports = {name: free_port() for name in SERVICES}
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
            AGENTMESH_JWKS_URL=f"{base['identity']}/.well-known/jwks.json",
            GATEWAY_IDENTITY_URL=base["identity"],
            GATEWAY_AGENTS_URL=base["agents"],
            GATEWAY_CHAT_URL=base["chat"],
        )
        processes = {
            name: spawn(f"agentmesh.{name}.app:create_app", ports[name], env) for name in SERVICES
        }
        try:
            for name in SERVICES:
                await wait_ready(f"{base[name]}/health/ready", 120)
            await asyncio.sleep(5)
            return {
                name: psutil.Process(p.pid).memory_info().rss / 2**20
                for name, p in processes.items()
            }
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(10)


def up_time() -> float:
    """Seconds from ``agentmesh up`` to its ready banner, on a new data directory."""
    data = Path(tempfile.mkdtemp(prefix="agentmesh-up-bench-"))
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentmesh.shared.cli",
            "up",
            "--data-dir",
            str(data),
            "--port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "Press Ctrl-C" in line:
                return time.perf_counter() - started
        raise RuntimeError("agentmesh up exited before it was ready")
    finally:
        process.terminate()
        process.wait(60)


def row(figure: str, value: str, target: str, conditions: str, command: str) -> dict[str, str]:
    return {
        "figure": figure,
        "value": value,
        "target": target,
        "conditions": conditions,
        "command": command,
    }


async def main(skip: set[str] = frozenset()) -> list[dict[str, str]]:
    logging.disable(logging.INFO)
    rows = []
    gw = await gateway.main(10, 32)
    rows += [
        row(
            "gateway throughput vs calling identity directly",
            f"{gw['throughput_ratio']:.2f}x",
            "≥ 0.7x",
            "GET /api/v1/users/me with a JWT, 32 connections, 10 s, wrk or aiohttp "
            "in another process",
            "uv run python -m bench.gateway",
        ),
        row(
            "gateway added latency, 1 connection",
            f"p50 +{gw['added_p50_ms']:.2f} ms, p99 +{gw['added_p99_ms']:.2f} ms",
            "p50 < 1 ms",
            "same",
            "uv run python -m bench.gateway",
        ),
    ]
    rows += read_path_rows(await read_path.main(5, 32))
    ch = await chat.main(30, 8)
    rows += [
        row(
            "time to first token added, conversation path (gateway + chat)",
            f"p50 +{ch['added_ttft_p50_ms']:.1f} ms, p95 +{ch['added_ttft_p95_ms']:.1f} ms",
            "p50 ≤ 5 ms",
            "local OpenAI-compatible server with a 50 ms TTFT, 30 sequential "
            "streamed turns in one conversation (it grows to ~70 messages; the direct call "
            "sends the same messages), 4 services 1 worker each",
            "uv run python -m bench.chat",
        ),
        row(
            "time to first token added, /v1/chat/completions (gateway + chat)",
            f"p50 +{ch.get('openai_added_ttft_p50_ms', float('nan')):.1f} ms, p95 "
            f"+{ch.get('openai_added_ttft_p95_ms', float('nan')):.1f} ms",
            "p50 ≤ 3 ms",
            "same server, 30 sequential streamed one-message completions",
            "uv run python -m bench.chat",
        ),
        row(
            "concurrent streams sustained",
            ", ".join(
                f"{v['completed']}/{n} in {v['seconds']:.1f} s" for n, v in ch["streams"].items()
            ),
            "",
            "50, 100 and 200 streamed turns at once, each in its own conversation, same "
            "server (50 ms TTFT, 20 tokens 2 ms apart)",
            "uv run python -m bench.chat",
        ),
        row(
            "offline chat turns through the gateway",
            f"{ch['offline_turns_per_second']:.1f}/s ({ch['offline_errors']} errors)",
            "≥ 300/s",
            "16 concurrent clients, non-streamed turns, 8 s, 16 conversations that grow as they go",
            "uv run python -m bench.chat",
        ),
    ]
    mp = await model_path.main(40, 8)
    peer = (
        f"{model_path.LITELLM} in a throwaway environment, 1 worker, master key, no database; "
        "same upstream (50 ms to first token, 20 tokens 2 ms apart) and aiohttp client; "
        "4 services 1 worker each"
    )
    rows += [
        row(
            "time to first token added, /v1/chat/completions ÷ LiteLLM proxy's, same run",
            f"{mp['added_ttft_ratio']:.2f} (p50 +{mp['agentmesh_added_ttft_p50_ms']:.1f} ms vs "
            f"+{mp['litellm_added_ttft_p50_ms']:.1f} ms)",
            "≤ 0.3",
            f"40 sequential rounds (direct, AgentMesh, LiteLLM), one-message prompt; {peer}",
            "uv run python -m bench.model_path",
        ),
        row(
            "streams completed per second at 32 concurrent ÷ LiteLLM's, same run",
            f"{mp['streams_ratio']:.2f} ({mp['agentmesh_streams_per_s']:.1f}/s vs "
            f"{mp['litellm_streams_per_s']:.1f}/s; upstream alone "
            f"{mp['direct_streams_per_s']:.0f}/s)",
            "≥ 3",
            f"32 clients streaming in a closed loop, 8 s each peer; {peer}",
            "uv run python -m bench.model_path",
        ),
    ]
    ev = await event_propagation.main(500, 100.0)
    rows.append(
        row(
            "event commit -> consumer effect",
            f"p50 {ev['p50_ms']:.1f} ms, p99 {ev['p99_ms']:.1f} ms",
            "p99 < 50 ms",
            "500 events at 100/s, one relay, one consumer",
            "uv run python -m bench.event_propagation",
        )
    )
    if "knowledge" in skip:
        rows.append(
            row(
                "knowledge search, 100k chunks",
                "not run (--skip knowledge)",
                "p95 < 20 ms, recall@10 ≥ 0.95",
                "",
                "uv run python -m bench.knowledge_search",
            )
        )
    else:
        ks = await knowledge_search.main(total=100_000, real=8000, queries=300)
        hybrid, vector, kw = ks["hybrid@100"], ks["vector@100"], ks["keyword@100"]
        rows.append(
            row(
                "knowledge search, 100k chunks",
                f"vector p95 {vector['p95']:.1f} ms, "
                f"recall@10 {vector.get('recall', float('nan')):.3f}; hybrid p95 "
                f"{hybrid['p95']:.1f} ms; keyword p95 {kw['p95']:.1f} ms (overlap@10 "
                f"with unpruned ts_rank_cd {kw['overlap']:.2f})",
                "p95 < 20 ms, recall@10 ≥ 0.95",
                "384-d, HNSW cosine, ef_search 100, keyword candidate cap "
                f"{kw['cap']}, 300 sequential queries, one connection",
                "uv run python -m bench.knowledge_search",
            )
        )
        ingest = await knowledge_ingest.main(200, 32, 256, 20, 3)
        alone, path = ingest["embedding_only"], ingest["ingest_path"]
        rows.append(
            row(
                "knowledge ingest, local all-MiniLM-L6-v2 on numpy",
                f"{path['chunks_per_s']:.1f} chunks/s end to end "
                f"({alone['chunks_per_s']:.1f}/s embedding 200-token chunks alone)",
                "",
                f"{path['documents']} markdown documents, {path['chunks']} chunks of "
                "<= 800 chars, batches of 32, both cores",
                "uv run python -m bench.knowledge_ingest",
            )
        )
    login = await identity_login.main(50, 5000)
    rows.append(
        row(
            "login latency",
            f"p50 {login['login_p50_ms']:.1f} ms, p95 {login['login_p95_ms']:.1f} ms",
            "",
            "Argon2id m=19 MiB t=2 p=1, 50 sequential logins",
            "uv run python -m bench.identity_login",
        )
    )
    rss = await idle_rss()
    rows.append(
        row(
            "idle RSS per service",
            ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()),
            "",
            "one uvicorn worker, 5 s after ready",
            "uv run python -m bench.suite",
        )
    )
    rows.append(
        row(
            "`make up` time to ready",
            f"{await asyncio.to_thread(up_time):.1f} s",
            "",
            "new data directory, migrations included",
            "uv run agentmesh up",
        )
    )
    return rows


def read_path_rows(results: dict[str, dict]) -> list[dict[str, str]]:
    """One row per read path: through the gateway ÷ a bare FastAPI app, same load."""
    return [
        row(
            f"read path ÷ bare FastAPI app: {label} through the gateway",
            f"{r['ratio']:.3f} ({r['gateway']['rps']:.0f}/s vs {r['bare']['rps']:.0f}/s; "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms"].items())
            + " CPU ms/request)",
            "≥ 0.25",
            "wrk (or aiohttp) in another process, 32 connections, 5 s per target, one run; "
            "four services 1 uvicorn worker each as make up starts them (INFO logs), gateway "
            "rate limits lifted; the bare app answers the captured body with JSONResponse",
            "uv run python -m bench.read_path",
        )
        for label, r in results.items()
    ]


def merge(rows: list[dict[str, str]]) -> None:
    """Replace these figures in ``latest.md``/``.json`` (one benchmark run alone), keeping
    the others with the date they were measured."""
    path = RESULTS / "latest.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    old = previous.get("figures", [])
    names = {r["figure"] for r in rows}
    kept = [r for r in old if r["figure"] not in names]
    at = next((i for i, r in enumerate(old) if r["figure"] in names), len(kept))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    since = previous.get("date", now).split(";")[0]
    write(kept[:at] + rows + kept[at:], f"{since}; {len(rows)} rows re-measured {now}")


def write(rows: list[dict[str, str]], date: str | None = None) -> None:
    RESULTS.mkdir(exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    meta = {"machine": machine(), "date": date or now}
    (RESULTS / "latest.json").write_text(json.dumps({**meta, "figures": rows}, indent=2) + "\n")
    lines = [
        f"# Benchmark results ({meta['date']}, {meta['machine']})",
        "",
        "| figure | measured | target | conditions | command |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            re.sub(r"\|", "\\|", r[k])
            for k in ("figure", "value", "target", "conditions", "command")
        ]
        lines.append("| " + " | ".join(cells[:4]) + f" | `{cells[4]}` |")
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--skip", action="append", default=[], choices=["knowledge"])
    write(asyncio.run(main(set(parser.parse_args().skip))))

"""Two replicas each of gateway, agents and chat, as separate processes on one Postgres and
one NATS (ours, so it can be killed), prove what the README's "Deploy and scale" claims:

- each ``agents.agent.*`` event is handled once by chat, by whichever replica took it;
- a chat replica killed mid-stream: the client resumes on the other with
  ``Last-Event-ID`` and gets the rest, ended by ``run.failed`` + ``done``;
- NATS killed for 10 seconds under a steady write load: every write succeeds, no event
  is lost, and chat's agent read-model converges to exactly the agents' state.

Layout: identity x1; agents A, B; chat A, B; gateway 1 -> (agents A, chat A), gateway 2 ->
(agents B, chat B), since a gateway takes one URL per service. Clients alternate gateways.

Which replica handled an event comes from the chat processes' own logs: chat logs
``agent event applied`` (with the event id) when it applies an ``agents.agent.*`` event,
and the inbox logs ``duplicate event skipped`` when it refuses a redelivery.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest

from agentmesh.shared.events.relay import asyncpg_dsn
from agentmesh.shared.local.nats import EmbeddedNats
from agentmesh.shared.local.ports import free_port
from agentmesh.shared.local.process import die_with_parent
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
UNLIMITED = {"rate_limit": {"rate": 1e6, "burst": 10**6}}
GROUPS = ("auth", "identity", "agents", "knowledge", "chat", "chat_runs")
#: Chat replicas mark their runs alive every second; a run silent for 5 s is orphaned.
RUN_HEARTBEAT_SECONDS, RUN_ORPHAN_SECONDS = 1.0, 5.0

pytestmark = pytest.mark.timeout(480)


# ---------------------------------------------------------------------- processes


@dataclass
class Service:
    name: str  # "chat-a"
    module: str  # "agentmesh.chat.app:create_app"
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    self.module,
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=die_with_parent(),
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no cleanup, as a crashed machine."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def records(self) -> Iterator[dict[str, Any]]:
        """The JSON log records the process wrote."""
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    yield json.loads(line)


@dataclass
class Platform:
    database_url: str
    nats: EmbeddedNats
    services: dict[str, Service]
    llm_url: str
    gateways: list[httpx.AsyncClient] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def chats(self) -> list[Service]:
        return [self.services["chat-a"], self.services["chat-b"]]

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(asyncpg_dsn(self.database_url))


async def wait_ready(service: Service, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if service.process is not None and service.process.poll() is not None:
                tail = service.log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{service.name} exited:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{service.url}/health/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{service.name} never became ready")


def platform_env(database_url: str, nats_url: str, identity_url: str) -> dict[str, str]:
    prefixes = ("AGENTMESH_", "IDENTITY_", "AGENTS_", "CHAT_", "GATEWAY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {
        "PYTHONUNBUFFERED": "1",
        "AGENTMESH_ENV": "test",
        "AGENTMESH_DATABASE_URL": database_url,
        "AGENTMESH_NATS_URL": nats_url,
        "AGENTMESH_LOG_LEVEL": "WARNING",
        "AGENTMESH_NATS_CONNECT_WAIT_SECONDS": "5",
        "AGENTMESH_OUTBOX_SWEEP_SECONDS": "0.5",
        "AGENTMESH_CONSUMER_BACKOFF_SECONDS": "0.05",
        "AGENTMESH_INTERNAL_TOKEN": TEST_INTERNAL_TOKEN,
        "AGENTMESH_ALLOW_PRIVATE_NETWORK": "true",
        "AGENTMESH_JWKS_URL": f"{identity_url}/.well-known/jwks.json",
        "IDENTITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY,
        "AGENTS_PROVIDER_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY,
        "CHAT_RUN_HEARTBEAT_SECONDS": str(RUN_HEARTBEAT_SECONDS),
        "CHAT_RUN_ORPHAN_SECONDS": str(RUN_ORPHAN_SECONDS),
        "CHAT_HEARTBEAT_SECONDS": "1",
        "GATEWAY_GROUPS": json.dumps({group: UNLIMITED for group in GROUPS}),
    }


def start_fake_llm() -> subprocess.Popen[bytes]:
    """The model, in a process of its own: first token after 50 ms, then one of 20 tokens
    every 300 ms. It prints its base URL first."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.fake_llm", "0.05", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        preexec_fn=die_with_parent(),
    )


@pytest.fixture(scope="module")
async def platform(migrated_database_url: str, tmp_path_factory) -> AsyncIterator[Platform]:
    # pytest keeps the last few of these directories: each process's log is there.
    root = tmp_path_factory.mktemp("replicas")
    nats_server = EmbeddedNats(root / "nats", free_port())
    nats_server.start()
    llm: subprocess.Popen[bytes] | None = None
    services: dict[str, Service] = {}
    try:
        llm = start_fake_llm()
        assert llm.stdout is not None
        llm_url = (await asyncio.to_thread(llm.stdout.readline)).decode().strip()
        ports = {
            name: free_port()
            for name in (
                "identity",
                "agents-a",
                "agents-b",
                "chat-a",
                "chat-b",
                "gateway-1",
                "gateway-2",
            )
        }
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env = platform_env(migrated_database_url, nats_server.url, url["identity"])
        plan = {
            "identity": ("identity", {}),
            "agents-a": ("agents", {}),
            "agents-b": ("agents", {}),
            "chat-a": ("chat", {"AGENTMESH_LOG_LEVEL": "INFO"}),
            "chat-b": ("chat", {"AGENTMESH_LOG_LEVEL": "INFO"}),
            "gateway-1": (
                "gateway",
                {"GATEWAY_AGENTS_URL": url["agents-a"], "GATEWAY_CHAT_URL": url["chat-a"]},
            ),
            "gateway-2": (
                "gateway",
                {"GATEWAY_AGENTS_URL": url["agents-b"], "GATEWAY_CHAT_URL": url["chat-b"]},
            ),
        }
        for name, (kind, extra) in plan.items():
            services[name] = Service(
                name,
                f"agentmesh.{kind}.app:create_app",
                ports[name],
                env | {"GATEWAY_IDENTITY_URL": url["identity"]} | extra,
                root / f"{name}.log",
            )
        began = time.monotonic()
        for service in services.values():  # all at once: starting is most of the cost
            service.start()
        await asyncio.gather(*(wait_ready(service) for service in services.values()))
        print(f"\n7 service processes ready in {time.monotonic() - began:.1f} s")
        platform = Platform(migrated_database_url, nats_server, services, llm_url)
        async with contextlib.AsyncExitStack() as stack:
            for name in ("gateway-1", "gateway-2"):
                platform.gateways.append(
                    await stack.enter_async_context(
                        httpx.AsyncClient(base_url=services[name].url, timeout=30)
                    )
                )
            platform.headers = await sign_up(platform.gateways[0])
            yield platform
    finally:
        for service in services.values():
            service.stop()
        if llm is not None:
            llm.kill()
            llm.wait(10)
        nats_server.stop()
        shutil.rmtree(root / "nats", ignore_errors=True)


async def sign_up(gateway: httpx.AsyncClient) -> dict[str, str]:
    body = {
        "email": f"replicas-{uuid.uuid4().hex[:8]}@example.com",
        "password": PASSWORD,
        "name": "Replicas",
    }
    assert (await gateway.post("/api/v1/auth/register", json=body)).status_code == 201
    login = await gateway.post("/api/v1/auth/login", json=body)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


# ---------------------------------------------------------------------- state in Postgres


async def agents_state(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> dict[str, tuple]:
    rows = await conn.fetch(
        "SELECT id, version, deleted_at IS NOT NULL AS deleted, name "
        "FROM agents.agents WHERE id = ANY($1)",
        ids,
    )
    return {
        str(r["id"]): (r["version"], r["deleted"], None if r["deleted"] else r["name"])
        for r in rows
    }


async def chat_state(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> dict[str, tuple]:
    rows = await conn.fetch(
        "SELECT agent_id, version, deleted, config->>'name' AS name "
        "FROM chat.agent_snapshots WHERE agent_id = ANY($1)",
        ids,
    )
    return {
        str(r["agent_id"]): (r["version"], r["deleted"], None if r["deleted"] else r["name"])
        for r in rows
    }


async def converge(platform: Platform, ids: list[uuid.UUID], timeout: float = 90) -> float:
    """Wait until chat's read-model equals the agents' state for ``ids``; the time it took."""
    started = time.monotonic()
    conn = await platform.db()
    try:
        while True:
            expected = await agents_state(conn, ids)
            assert len(expected) == len(ids)
            if await chat_state(conn, ids) == expected:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                missing = {
                    k: v for k, v in expected.items() if (await chat_state(conn, ids)).get(k) != v
                }
                raise AssertionError(f"chat never converged; differing: {missing}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def agent_events(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> list[str]:
    """The ``agents.agent.*`` events the agents services wrote for ``ids`` (their outbox)."""
    rows = await conn.fetch(
        "SELECT event_id FROM agents.outbox WHERE subject LIKE "
        "'agents.agent.%' AND subject_id = ANY($1)",
        [str(i) for i in ids],
    )
    return [str(r["event_id"]) for r in rows]


async def delivered(conn: asyncpg.Connection, event_ids: list[str]) -> list[str]:
    """Those of ``event_ids`` in chat's inbox for its agents consumer."""
    rows = await conn.fetch(
        "SELECT event_id FROM chat.inbox WHERE consumer = 'chat-agents' "
        "AND event_id = ANY($1::uuid[])",
        event_ids,
    )
    return [str(r["event_id"]) for r in rows]


def handled_by(platform: Platform, message: str) -> dict[str, collections.Counter[str]]:
    """Per chat replica: how often its log says ``message`` about each event id."""
    return {
        chat.name: collections.Counter(
            r["event_id"]
            for r in chat.records()
            if r.get("message") == message and r.get("consumer", "chat-agents") == "chat-agents"
        )
        for chat in platform.chats
    }


# ---------------------------------------------------------------------- client helpers


async def create_agents(platform: Platform, n: int, label: str, **extra: Any) -> list[uuid.UUID]:
    async def one(i: int) -> uuid.UUID:
        gateway = platform.gateways[i % 2]
        response = await gateway.post(
            "/api/v1/agents",
            headers=platform.headers,
            json={
                "name": f"{label}-{i}",
                "instructions": "Keep things.",
                "model": "offline",
                **extra,
            },
        )
        assert response.status_code == 201, response.text
        return uuid.UUID(response.json()["id"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def rename(platform: Platform, gateway: int, agent_id: uuid.UUID, name: str) -> int:
    response = await platform.gateways[gateway].patch(
        f"/api/v1/agents/{agent_id}", headers=platform.headers, json={"name": name}
    )
    return response.status_code


# ---------------------------------------------------------------------- the proofs


async def test_each_event_is_handled_once_per_service(platform: Platform) -> None:
    ids = await create_agents(platform, 24, "once")

    async def history(i: int, agent_id: uuid.UUID) -> None:
        for step in range(3):  # alternate the gateways, hence the agents replicas
            assert await rename(platform, (i + step + 1) % 2, agent_id, f"once-{i}-{step}") == 200
        if i % 4 == 0:
            gateway = platform.gateways[i % 2]
            deleted = await gateway.delete(f"/api/v1/agents/{agent_id}", headers=platform.headers)
            assert deleted.status_code == 204, deleted.text

    await asyncio.gather(*(history(i, agent_id) for i, agent_id in enumerate(ids)))
    took = await converge(platform, ids)
    await asyncio.sleep(1.0)  # anything extra (a second handling) would show by now

    conn = await platform.db()
    try:
        written = await agent_events(conn, ids)
        inbox = await delivered(conn, written)
    finally:
        await conn.close()
    assert len(written) == 24 * 4 + 6  # created, three updates each, six deletions
    assert sorted(inbox) == sorted(written)  # each event in chat's inbox, exactly once
    applied = handled_by(platform, "agent event applied")
    total = applied["chat-a"] + applied["chat-b"]
    assert {event: total[event] for event in written} == dict.fromkeys(written, 1)
    per_replica = {name: sum(counts[e] for e in written) for name, counts in applied.items()}
    assert all(per_replica.values()), per_replica  # both replicas took their share
    print(
        f"\nonce per service: {len(written)} agent events written through 2 gateways / "
        f"2 agents replicas; chat inbox has each once; handled by chat-a "
        f"{per_replica['chat-a']}, chat-b {per_replica['chat-b']}; read-model converged "
        f"{took:.2f} s after the last write"
    )


async def test_nats_killed_for_ten_seconds_under_writes_loses_no_event(platform: Platform) -> None:
    ids = await create_agents(platform, 40, "outage")
    await converge(platform, ids)
    conn = await platform.db()
    before = set(await agent_events(conn, ids))
    await conn.close()

    rate, duration, down_at, down_for = 20, 25.0, 7.5, 10.0
    workers = 4  # each keeps one request in flight: a steady load that can't pile up
    statuses: list[int] = []
    started = time.monotonic()
    restarted_at: float | None = None

    async def outage() -> None:
        nonlocal restarted_at
        await asyncio.sleep(down_at)
        assert platform.nats.process is not None
        platform.nats.process.send_signal(signal.SIGKILL)  # no goodbye to anyone
        await asyncio.to_thread(platform.nats.stop)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(platform.nats.start)  # same port, same JetStream data
        restarted_at = time.monotonic()

    async def writer(w: int) -> None:
        for n in itertools.count():
            due = started + (n * workers + w) / rate
            if due - started >= duration:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            i = n * workers + w
            statuses.append(await rename(platform, w % 2, ids[i % len(ids)], f"outage-{i}"))

    breaker = asyncio.create_task(outage())
    await asyncio.gather(*(writer(w) for w in range(workers)))
    await breaker
    last_write = time.monotonic()
    assert restarted_at is not None
    assert collections.Counter(statuses) == {200: len(statuses)}  # every write succeeded

    converged_after = await converge(platform, ids)
    since_restart = time.monotonic() - restarted_at
    # Every delivered event acked, so any redelivery (an ack lost with NATS) has happened
    # and met the inbox before we count the duplicates.
    nc = await nats.connect(platform.nats.url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            info = await js.consumer_info("AGENTS", "chat-agents")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.5)
        in_stream = (await js.stream_info("AGENTS")).state.messages
    finally:
        await nc.close()

    conn = await platform.db()
    try:
        written = [e for e in await agent_events(conn, ids) if e not in before]
        inbox = await delivered(conn, written)
    finally:
        await conn.close()
    assert len(written) == len(statuses)  # one event per write, all in the outbox
    assert sorted(inbox) == sorted(written)  # every one delivered, once
    applied = handled_by(platform, "agent event applied")
    total = applied["chat-a"] + applied["chat-b"]
    assert {event: total[event] for event in written} == dict.fromkeys(written, 1)
    skipped = handled_by(platform, "duplicate event skipped")
    duplicates = sum(counts[e] for counts in skipped.values() for e in written)
    per_replica = {name: sum(counts[e] for e in written) for name, counts in applied.items()}
    print(
        f"\nNATS killed (SIGKILL) for {down_for:.0f} s in the middle of {duration:.0f} s of agent "
        f"updates through 2 gateways (target {rate}/s, {workers} writers):\n"
        f"  writes: {len(statuses)} ({len(statuses) / (last_write - started):.1f}/s), all 200\n"
        f"  events written (agents outbox): {len(written)}\n"
        f"  delivered (chat inbox, chat-agents): {len(inbox)}; handled by chat-a "
        f"{per_replica['chat-a']}, chat-b {per_replica['chat-b']}; lost: "
        f"{len(set(written) - set(inbox))}\n"
        f"  duplicates suppressed (redeliveries the inbox refused): {duplicates}\n"
        f"  AGENTS stream holds {in_stream} messages in all "
        f"(a re-publish with the same Nats-Msg-Id is dropped)\n"
        f"  converged {converged_after:.2f} s after the last write, "
        f"{since_restart:.2f} s after NATS came back "
        f"(writes went on for {last_write - restarted_at:.1f} s after it)"
    )


async def test_a_chat_replica_killed_mid_stream_resumes_on_the_other(platform: Platform) -> None:
    gateway_a, gateway_b = platform.gateways  # gateway 1 -> chat A, gateway 2 -> chat B
    headers = platform.headers
    provider = await gateway_a.post(
        "/api/v1/providers",
        headers=headers,
        json={
            "kind": "openai",
            "name": "slow",
            "base_url": platform.llm_url,
            "api_key": "test-key",
        },
    )
    assert provider.status_code == 201, provider.text
    [agent_id] = await create_agents(
        platform, 1, "slow", provider_id=provider.json()["id"], model="fake-model"
    )
    await converge(platform, [agent_id])
    created = await gateway_a.post(
        "/api/v1/conversations", headers=headers, json={"agent_id": str(agent_id)}
    )
    assert created.status_code == 201, created.text
    conversation = created.json()["id"]

    chat_a = platform.services["chat-a"]
    seen: list[dict[str, Any]] = []
    killed_at: float | None = None
    async with gateway_a.stream(
        "POST",
        f"/api/v1/conversations/{conversation}/messages",
        headers=headers,
        json={"content": "talk", "stream": True},
    ) as response:
        assert response.status_code == 200
        run_id = response.headers["X-Run-Id"]
        buffer = ""
        with contextlib.suppress(httpx.HTTPError):
            async for chunk in response.aiter_text():
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                seen += parse_sse(blocks)
                deltas = sum(e["event"] == "message.delta" for e in seen)
                if deltas >= 3 and killed_at is None:
                    chat_a.kill()  # mid-stream, while this client is still reading
                    killed_at = time.monotonic()
    assert killed_at is not None and chat_a.process is not None
    assert chat_a.process.poll() is not None
    assert seen[-1]["event"] == "message.delta"  # the stream broke off mid-answer
    last = seen[-1]["id"]

    resumed = await asyncio.wait_for(
        gateway_b.get(
            f"/api/v1/runs/{run_id}/events",
            headers={**headers, "Last-Event-ID": str(last)},
            timeout=60,
        ),
        timeout=60,
    )
    ended_after = time.monotonic() - killed_at
    assert resumed.status_code == 200, resumed.text
    rest = parse_sse(resumed.text.split("\n\n"))
    assert [e["id"] for e in rest] == list(range(last + 1, last + 1 + len(rest)))
    assert [e["event"] for e in rest][-2:] == ["run.failed", "done"]
    assert rest[-2]["data"]["type"].endswith("/run-interrupted")
    assert all(e["event"] == "message.delta" for e in rest[:-2])
    run = (await gateway_b.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
    assert run["status"] == "failed"
    streamed = "".join(e["data"]["delta"] for e in seen + rest if e["event"] == "message.delta")
    history = await gateway_b.get(f"/api/v1/conversations/{conversation}/messages", headers=headers)
    answer = history.json()["items"][-1]
    assert (answer["status"], answer["content"]) == ("failed", streamed)
    print(
        f"\nchat-a killed after event {last}; resumed on chat-b with Last-Event-ID {last}: "
        f"events {last + 1}..{rest[-1]['id']} ({len(rest) - 2} more deltas, run.failed, "
        f"done), {ended_after:.1f} s after the kill (orphan timeout "
        f"{RUN_ORPHAN_SECONDS:.0f} s); partial answer saved as failed"
    )


def parse_sse(blocks: list[str]) -> list[dict[str, Any]]:
    events = []
    for block in blocks:
        fields = dict(
            line.split(": ", 1)
            for line in block.splitlines()
            if ": " in line and not line.startswith(":")
        )
        if "event" in fields:
            events.append(
                {
                    "id": int(fields["id"]),
                    "event": fields["event"],
                    "data": json.loads(fields["data"]),
                }
            )
    return events

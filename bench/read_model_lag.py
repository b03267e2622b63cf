"""Agent read-model lag: agents commits a new agent version -> chat's snapshot has it.

    uv run python -m bench.read_model_lag [--updates 300] [--rate 50] [--agents 10]

The agents and chat apps run in this process on embedded Postgres and NATS, with their
real outbox relay and JetStream consumer. Each update is a PATCH through the agents API;
the clock starts when its transaction (new version + ``agents.agent.updated`` in the
outbox) commits and stops when chat's consumer transaction (snapshot upsert + inbox row)
commits. Same process, same clock. Updates go round-robin over several agents.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event as sa_event

import agentmesh.chat.events
from agentmesh.agents.app import create_app as create_agents
from agentmesh.agents.settings import AgentsSettings
from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.settings import ChatSettings
from agentmesh.shared.events.contracts import AgentUpdated
from agentmesh.shared.settings import CommonSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    serve_app,
)
from agentmesh.shared.testing.jwt_keys import SigningKey, jwks, make_claims
from bench.servers import machine, percentile, servers

Stamps = dict[tuple[str, int], float]


def stamp_on_commit(session: Any, stamps: Stamps, key: tuple[str, int]) -> None:
    def stamp(_session: object) -> None:
        stamps.setdefault(key, time.perf_counter())

    sa_event.listen(session.sync_session, "after_commit", stamp)


def instrument_chat(applied: Stamps) -> None:
    """Stamp chat's consumer commits; must run before ``create_chat`` registers it."""
    handler = agentmesh.chat.events.on_agent_event

    async def on_agent_event(session, envelope, payload):  # type: ignore[no-untyped-def]
        await handler(session, envelope, payload)
        if isinstance(payload, AgentUpdated):
            stamp_on_commit(session, applied, (str(payload.agent_id), payload.agent_version))

    agentmesh.chat.events.on_agent_event = on_agent_event  # type: ignore[assignment]


def instrument_agents(app: FastAPI, committed: Stamps) -> None:
    """Stamp the commit of every transaction that adds ``agents.agent.updated``."""
    outbox = app.state.outbox
    add = outbox.add

    async def add_and_stamp(session, payload):  # type: ignore[no-untyped-def]
        envelope = await add(session, payload)
        if isinstance(payload, AgentUpdated):
            stamp_on_commit(session, committed, (str(payload.agent_id), payload.agent_version))
        return envelope

    outbox.add = add_and_stamp


def jwks_app(key: SigningKey) -> FastAPI:
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def published() -> dict[str, Any]:
        return jwks([key])

    return app


async def main(updates: int, rate: float, agent_count: int) -> dict[str, float]:
    committed: Stamps = {}
    applied: Stamps = {}
    key = SigningKey()
    headers = {"Authorization": f"Bearer {key.sign(make_claims(uuid.uuid4(), roles=('user',)))}"}
    async with servers() as (database_url, nats_url), serve_app(jwks_app(key)) as jwks_base:
        common = CommonSettings(
            env="test",
            database_url=database_url,
            nats_url=nats_url,
            log_level="WARNING",
            jwks_url=f"{jwks_base}/.well-known/jwks.json",
        )
        agents_app = create_agents(
            AgentsSettings(
                common=common,
                provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                internal_token=TEST_INTERNAL_TOKEN,
            )
        )
        instrument_agents(agents_app, committed)
        instrument_chat(applied)
        chat_app = create_chat(ChatSettings(common=common, internal_token=TEST_INTERNAL_TOKEN))
        async with app_client(agents_app) as agents, app_client(chat_app):
            ids = []
            for i in range(agent_count):
                created = await agents.post(
                    "/api/v1/agents", json={"name": f"Bench {i}"}, headers=headers
                )
                assert created.status_code == 201, created.text
                ids.append(created.json()["id"])
            await asyncio.sleep(1)  # let the creations through first
            interval = 1 / rate
            for i in range(updates):
                agent_id = ids[i % agent_count]
                patched = await agents.patch(
                    f"/api/v1/agents/{agent_id}",
                    json={"description": f"update {i}"},
                    headers=headers,
                )
                assert patched.status_code == 200, patched.text
                await asyncio.sleep(interval)
            deadline = time.monotonic() + 60
            while not committed.keys() <= applied.keys() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    lags = [(applied[k] - committed[k]) * 1000 for k in committed if k in applied]
    figures = {
        "updates": updates,
        "seen": len(lags),
        "p50_ms": statistics.median(lags),
        "p95_ms": percentile(lags, 95),
        "p99_ms": percentile(lags, 99),
        "max_ms": max(lags),
    }
    print(f"agents commit -> chat agent snapshot has the version ({machine()})")
    print(
        f"  {updates} PATCHes over {agent_count} agents, {rate:.0f}/s; agents and chat apps "
        "in one process, outbox relay (LISTEN/NOTIFY), JetStream, durable pull consumer"
    )
    print(
        f"  seen {figures['seen']}/{updates}; p50 {figures['p50_ms']:.1f} ms, "
        f"p95 {figures['p95_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
        f"max {figures['max_ms']:.1f} ms"
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--agents", type=int, default=10)
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # the pull consumer logs its idle fetch timeouts
    asyncio.run(main(args.updates, args.rate, args.agents))

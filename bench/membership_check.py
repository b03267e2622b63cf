"""The cost of the workspace membership check per request.

    uv run python -m bench.membership_check [--calls 200000] [--requests 3000] [--members 100000]

1. ``shared.access.resolve`` in process, per call, against a membership view holding
   ``--members`` memberships (the dict lookup every request makes), and the whole
   ``access_to`` dependency (resolve, role and scope checks) called as FastAPI calls it.
2. A GET of one agent through the agents app (httpx ASGITransport, embedded Postgres and
   NATS, one process), by two twin routes doing what ``GET /api/v1/agents/{id}`` does:
   one with the ``access_to`` dependency, one that only turns the verified token into an
   ``Access`` (no view, no role or scope check). Requests go in pairs, one each way, in
   alternating order, so drift hits both alike; the added cost is the median of the
   paired differences.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

from fastapi import Response

from agentmesh.agents.agents import service
from agentmesh.agents.app import create_app as create_agents
from agentmesh.agents.settings import AgentsSettings
from agentmesh.agents.workspaces import AgentsRead
from agentmesh.shared.access import Access, requires, resolve
from agentmesh.shared.auth import CurrentPrincipal, Principal
from agentmesh.shared.db import Session
from agentmesh.shared.memberships import MembershipView, membership_key
from agentmesh.shared.settings import CommonSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    serve_app,
)
from agentmesh.shared.testing.jwt_keys import SigningKey, make_claims
from bench.read_model_lag import jwks_app
from bench.servers import machine, percentile, servers


def loaded_view(members: int, workspace_id: uuid.UUID, user_id: uuid.UUID) -> MembershipView:
    view = MembershipView()
    now = datetime.now(UTC)
    entries = [
        (membership_key(uuid.uuid4(), uuid.uuid4()), b"member", False, now)
        for _ in range(members - 1)
    ]
    entries.append((membership_key(workspace_id, user_id), b"member", False, now))
    view.replace(entries)
    view.loaded.set()
    return view


async def in_process(calls: int, members: int) -> dict[str, float]:
    workspace_id, user_id = uuid.uuid4(), uuid.uuid4()
    view = loaded_view(members, workspace_id, user_id)
    principal = Principal(
        user_id=user_id,
        workspace_id=workspace_id,
        workspace_role="member",
        expires_at=datetime.now(UTC),
        issued_at=datetime(2020, 1, 1, tzinfo=UTC),
        scopes=("agents:read",),
    )
    assert resolve(principal, view).role == "member"
    started = time.perf_counter()
    for _ in range(calls):
        resolve(principal, view)
    per_resolve = (time.perf_counter() - started) / calls * 1e6
    dependency = requires("viewer", "agents:read")
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(memberships=view)))
    started = time.perf_counter()
    for _ in range(calls):
        await dependency(request, principal)  # type: ignore[arg-type]
    per_dependency = (time.perf_counter() - started) / calls * 1e6
    return {"resolve_us": per_resolve, "dependency_us": per_dependency}


def twin_routes(app) -> None:
    """Two copies of ``GET /api/v1/agents/{id}`` added last (same matching cost): one with
    the ``access_to`` dependency, one that only turns the verified token into an
    ``Access`` (no view, no role or scope check). FastAPI's ``dependency_overrides`` would
    not do: it re-inspects the override's signature on every request."""

    async def show(agent_id: uuid.UUID, access: Access, response: Response, session) -> dict:
        agent = await service.get_visible(session, access, agent_id)
        response.headers["ETag"] = service.etag(agent)
        config = await service._snapshot(session, agent)
        return service.to_out(agent, config).model_dump(mode="json")

    @app.get("/bench/with/{agent_id}")
    async def checked(
        agent_id: uuid.UUID, caller: AgentsRead, response: Response, session: Session
    ) -> dict:
        return await show(agent_id, caller, response, session)

    @app.get("/bench/without/{agent_id}")
    async def unchecked(
        agent_id: uuid.UUID, principal: CurrentPrincipal, response: Response, session: Session
    ) -> dict:
        access = Access(principal, principal.workspace_id, principal.workspace_role or "owner")  # type: ignore[arg-type]
        return await show(agent_id, access, response, session)


async def over_http(requests: int, members: int) -> dict[str, float]:
    key = SigningKey()
    user_id, workspace_id = uuid.uuid4(), uuid.uuid4()
    claims = make_claims(user_id, roles=("user",), wid=str(workspace_id), wrole="member")
    headers = {"Authorization": f"Bearer {key.sign(claims)}"}
    async with servers() as (database_url, nats_url), serve_app(jwks_app(key)) as jwks_base:
        common = CommonSettings(
            env="test",
            database_url=database_url,
            nats_url=nats_url,
            log_level="WARNING",
            jwks_url=f"{jwks_base}/.well-known/jwks.json",
        )
        app = create_agents(
            AgentsSettings(
                common=common,
                provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                internal_token=TEST_INTERNAL_TOKEN,
            )
        )
        async with app_client(app) as client:
            await asyncio.wait_for(app.state.memberships.loaded.wait(), 30)
            now = datetime.now(UTC)
            for _ in range(members - 1):  # a populated view, as in a busy deployment
                app.state.memberships.apply(
                    membership_key(uuid.uuid4(), uuid.uuid4()), b"member", False, now
                )
            twin_routes(app)
            created = await client.post("/api/v1/agents", json={"name": "B"}, headers=headers)
            assert created.status_code == 201, created.text
            agent_id = created.json()["id"]
            timings: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(50):  # warm-up
                await client.get(f"/bench/with/{agent_id}", headers=headers)
                await client.get(f"/bench/without/{agent_id}", headers=headers)
            for i in range(requests):  # pairs, in alternating order: drift hits both alike
                for mode in ("with", "without") if i % 2 == 0 else ("without", "with"):
                    started = time.perf_counter()
                    response = await client.get(f"/bench/{mode}/{agent_id}", headers=headers)
                    timings[mode].append((time.perf_counter() - started) * 1e6)
                    assert response.status_code == 200, response.text
    result = {}
    for mode, values in timings.items():
        result[f"{mode}_mean_us"] = statistics.fmean(values)
        result[f"{mode}_p50_us"] = percentile(values, 50)
        result[f"{mode}_p99_us"] = percentile(values, 99)
    pairs = [w - o for w, o in zip(timings["with"], timings["without"], strict=True)]
    result["added_p50_us"] = statistics.median(pairs)  # the median of paired differences
    result["ratio_p50"] = result["with_p50_us"] / result["without_p50_us"]
    result["ratio_mean"] = result["with_mean_us"] / result["without_mean_us"]
    return result


async def main(calls: int, requests: int, members: int) -> dict[str, float]:
    logging.disable(logging.ERROR)  # the broker's retried fetch timeouts are noise here
    local = await in_process(calls, members)
    print(f"membership check ({machine()}; a view of {members} memberships)")
    print(f"  shared.access.resolve, in process:        {local['resolve_us']:.2f} us/call")
    print(f"  access_to dependency (resolve + checks):  {local['dependency_us']:.2f} us/call")
    http = await over_http(requests, members)
    print(f"  GET of one agent (twin routes of GET /api/v1/agents/{{id}}), {requests} each way:")
    for mode in ("with", "without"):
        p50, mean, p99 = (http[f"{mode}_{stat}_us"] for stat in ("p50", "mean", "p99"))
        print(f"    {mode:>7} access_to: p50 {p50:.0f} us, mean {mean:.0f} us, p99 {p99:.0f} us")
    print(
        f"  added by the check (median of paired differences): {http['added_p50_us']:.0f} us;"
        " ratio with/without "
        f"p50 {http['ratio_p50']:.3f}, mean {http['ratio_mean']:.3f}"
    )
    return {**local, **http}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--members", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.requests, args.members))

"""Two gateway replicas against one NATS share their rate limits, the failed-authentication
limit and the refused-API-key cache: together they admit the configured burst and rate, not
twice it. Without the store they fall back to per-replica limits, never to none."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from prometheus_client import REGISTRY

from agentmesh.gateway.app import create_app as create_gateway
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.local.nats import EmbeddedNats
from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.fixtures import (
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    random_ip,
    serve_app,
)

from .conftest import INTERNAL_TOKEN, PASSWORD, StandIn
from .test_gateway import bearer

ECHO = "/api/v1/conversations/echo"
FROZEN = 0.001  # tokens per second: nothing refills while a test runs


@pytest.fixture
async def cluster(common_settings):
    """Identity and a stand-in upstream; ``cluster.replicas(n, **settings)`` gives clients
    of ``n`` gateway apps with those settings and one limits scope, all with one source IP."""
    async with AsyncExitStack() as stack:
        identity_url = await stack.enter_async_context(
            serve_app(
                create_identity(
                    IdentitySettings(
                        common=common_settings,
                        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                        internal_token=INTERNAL_TOKEN,
                    ),
                )
            )
        )
        chat_url = await stack.enter_async_context(serve_app(StandIn().app))

        class Cluster:
            @asynccontextmanager
            async def replicas(self, n: int = 2, common=None, **overrides):
                overrides.setdefault("limits_scope", uuid.uuid4().hex)
                ip = random_ip()
                async with AsyncExitStack() as inner:
                    clients = []
                    for _ in range(n):
                        app = create_gateway(
                            GatewaySettings(
                                common=common or common_settings,
                                identity_url=identity_url,
                                agents_url=chat_url,
                                chat_url=chat_url,
                                internal_token=INTERNAL_TOKEN,
                                **overrides,
                            )
                        )
                        client = await inner.enter_async_context(app_client(app, client_ip=ip))
                        client.app = app
                        clients.append(client)
                    yield clients

            async def token(self, client) -> str:
                body = {
                    "email": f"sl-{uuid.uuid4().hex[:10]}@example.com",
                    "password": PASSWORD,
                    "name": "Shared Limits",
                }
                assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
                return (await client.post("/api/v1/auth/login", json=body)).json()["access_token"]

        yield Cluster()


def chat_limit(rate: float, burst: int) -> dict:
    return {"chat": {"rate_limit": {"rate": rate, "burst": burst}}}


async def alternate(clients, count: int, path: str = ECHO, **kwargs) -> list[int]:
    """``count`` requests, round-robin over the replicas; their statuses."""
    ring = itertools.cycle(clients)
    return [(await next(ring).get(path, **kwargs)).status_code for _ in range(count)]


#: What two replicas may admit beyond the burst: each may be one batch ahead of the store
#: (a batch is 4 here, at most a quarter of the burst).
TOLERANCE = 2 * 4


async def test_two_replicas_together_admit_the_burst_not_twice_it(cluster):
    async with cluster.replicas(groups=chat_limit(FROZEN, 16)) as gws:
        token = await cluster.token(gws[0])
        statuses = await alternate(gws, 48, headers=bearer(token))
    assert 16 <= statuses.count(200) <= 16 + TOLERANCE, statuses
    assert statuses[-8:] == [429] * 8


async def test_with_sharing_off_each_replica_admits_its_own_burst(cluster):
    """The control of the test above: what the gateway did before, and does with
    ``GATEWAY_SHARED_LIMITS=false``."""
    async with cluster.replicas(groups=chat_limit(FROZEN, 16), shared_limits=False) as gws:
        token = await cluster.token(gws[0])
        statuses = await alternate(gws, 48, headers=bearer(token))
    assert statuses.count(200) == 32


async def test_two_replicas_together_admit_the_configured_rate(cluster):
    """Burst 1 at 4 requests/s, probed by both replicas for over two seconds: no more pass
    than one bucket allows in the time taken (plus the tolerance: a batch of 1 per
    replica), and some do pass as it refills. Per-replica buckets admit about twice as
    many (22 in 2.5 s)."""
    rate = 4.0
    async with cluster.replicas(groups=chat_limit(rate, 1)) as gws:
        token = await cluster.token(gws[0])
        ring, admitted, refused = itertools.cycle(gws), 0, 0
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            status = (await next(ring).get(ECHO, headers=bearer(token))).status_code
            admitted, refused = admitted + (status == 200), refused + (status == 429)
        elapsed = time.monotonic() - started
    assert refused > 0
    assert 2 <= admitted <= 1 + rate * elapsed + 2, (admitted, elapsed)


async def test_failed_authentications_are_counted_across_replicas(cluster):
    async with cluster.replicas(auth_failure_limit={"rate": FROZEN, "burst": 6}) as gws:
        statuses = await alternate(gws, 14, headers=bearer("not-a-token"))
    assert 6 <= statuses.count(401) <= 6 + 2  # burst 6: a batch of 1 per replica
    assert statuses[-6:] == [429] * 6


async def test_a_key_refused_by_one_replica_is_refused_by_the_other_without_an_exchange(cluster):
    async with cluster.replicas() as (first, second):
        key = {"X-API-Key": "am_unknown_" + uuid.uuid4().hex}
        assert (await first.get(ECHO, headers=key)).status_code == 401
        assert first.app.state.authenticator.exchanges == 1
        refused = await second.get(ECHO, headers=key)
        assert refused.status_code == 401
        assert refused.json()["type"].endswith("/invalid-api-key")
        assert second.app.state.authenticator.exchanges == 0  # identity was not asked


async def test_a_lost_store_falls_back_to_per_replica_limits_and_says_so(
    cluster, common_settings, tmp_path, caplog
):
    """The gateway's NATS goes away mid-run: requests are still limited, by the replica's
    own bucket (burst 4, which counted the 2 it admitted before), and the switch is
    logged and counted. The first request after the loss may still be admitted from the
    shared state (its write then fails): the one-batch tolerance."""
    server = EmbeddedNats(tmp_path / "nats", free_port())
    server.start()
    own = common_settings.model_copy(update={"nats_url": server.url})
    fallbacks = REGISTRY.get_sample_value("agentmesh_gateway_limits_fallbacks_total") or 0.0
    try:
        async with cluster.replicas(1, common=own, groups=chat_limit(FROZEN, 4)) as (gw,):
            token = await cluster.token(gw)
            assert await alternate([gw], 2, headers=bearer(token)) == [200, 200]
            assert gw.app.state.limits.round_trips > 0  # written to the shared store
            server.stop()
            with caplog.at_level(logging.WARNING, logger="agentmesh.gateway.limits"):
                statuses = await alternate([gw], 8, headers=bearer(token))
            assert 2 <= statuses.count(200) <= 3 and statuses[-5:] == [429] * 5
            assert gw.app.state.limits.falling_back
    finally:
        server.stop()
    assert any("falling back to per-replica limits" in r.message for r in caplog.records)
    assert REGISTRY.get_sample_value("agentmesh_gateway_limits_fallbacks_total") > fallbacks
    assert REGISTRY.get_sample_value("agentmesh_gateway_limits_fallback") == 1


async def test_an_unreachable_store_at_start_up_still_limits(cluster, common_settings):
    closed = common_settings.model_copy(
        update={"nats_url": f"nats://127.0.0.1:{free_port()}", "nats_connect_wait_seconds": 0.2}
    )
    async with cluster.replicas(2, common=closed, groups=chat_limit(FROZEN, 3)) as gws:
        token = await cluster.token(gws[0])
        statuses = await alternate(gws, 10, headers=bearer(token))
        assert all(gw.app.state.limits.falling_back for gw in gws)
    assert statuses.count(200) == 6  # each replica on its own: 3 each, not unlimited

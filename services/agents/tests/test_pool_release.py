"""No request holds a pooled connection while it waits on the network: with a pool of one
connection, a provider test, an MCP listing or a search on a remote embedding model that
hangs does not keep the service from answering another request."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from agentmesh.agents.app import create_app
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    serve_app,
)

#: The most the slow server waits to be released (the test releases it sooner).
HANG_SECONDS = 10


class SlowServer:
    """A loopback HTTP server whose every answer waits until the test releases it (or
    ``HANG_SECONDS`` pass): OpenAI-like ``/v1/models`` and ``/v1/embeddings``, and an
    ``/mcp`` that answers 204 (not MCP: the listing then fails, which is fine here)."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.held_too_long = asyncio.Event()  # ``HANG_SECONDS`` passed unreleased

    async def hold(self) -> None:
        """Wait until released, or until ``HANG_SECONDS`` pass (then say so)."""
        self.arrived.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), HANG_SECONDS)
        if not self.release.is_set():
            self.held_too_long.set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.hold()
        path = scope["path"]
        if path.endswith("/embeddings"):
            body = {
                "object": "list",
                "model": "embed",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1] * 384}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        elif path.endswith("/models"):
            body = {"object": "list", "data": [{"id": "slow-model", "object": "model"}]}
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@pytest.fixture
async def slow():
    server = SlowServer()
    async with serve_app(server) as base_url:
        server.base_url = base_url
        yield server
        server.release.set()


@pytest.fixture
async def agents_one_connection(common_settings, token_issuer):
    """The agents app on a pool of exactly one connection, waiting long for it: a request
    that holds it makes every other request wait until it is done."""
    common = common_settings.model_copy(
        update={
            "jwks_url": token_issuer.jwks_url,
            "db_pool_size": 1,
            "db_max_overflow": 0,
            "db_pool_timeout": 60.0,
        }
    )
    app = create_app(
        AgentsSettings(
            common=common,
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
            allow_private_network=True,
            mcp_timeout_seconds=60,
            provider_test_timeout_seconds=60,
        )
    )
    async with app_client(app) as client:
        client.app = app
        yield client


async def answered_while_pending(agents, slow: SlowServer, headers: dict, slow_call) -> None:
    """Start ``slow_call``; once the slow server holds it, another request must be answered
    while it is still held (before the server gives up holding it)."""
    pending = asyncio.create_task(slow_call)
    await asyncio.wait(
        {pending, asyncio.create_task(slow.arrived.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    assert not pending.done(), pending.result().text
    other = asyncio.create_task(agents.get("/api/v1/providers", headers=headers))
    gave_up = asyncio.create_task(slow.held_too_long.wait())
    done, _ = await asyncio.wait({other, gave_up}, return_when=asyncio.FIRST_COMPLETED)
    gave_up.cancel()
    assert other in done and not slow.held_too_long.is_set() and not pending.done(), (
        "the slow call held the only connection"
    )
    assert other.result().status_code == 200, other.result().text
    slow.release.set()
    await pending


async def test_a_hanging_provider_test_holds_no_connection(
    agents_one_connection, slow, token_issuer
):
    agents, headers = agents_one_connection, token_issuer.headers()
    created = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={"kind": "openai", "name": "Slow", "base_url": f"{slow.base_url}/v1"},
    )
    assert created.status_code == 201, created.text
    test_call = agents.post(f"/api/v1/providers/{created.json()['id']}/test", headers=headers)
    await answered_while_pending(agents, slow, headers, test_call)


async def test_a_hanging_mcp_listing_holds_no_connection(agents_one_connection, slow, token_issuer):
    agents, headers = agents_one_connection, token_issuer.headers()
    created = await agents.post(
        "/api/v1/mcp-servers", headers=headers, json={"name": "Slow", "url": f"{slow.base_url}/mcp"}
    )
    assert created.status_code == 201, created.text
    listing = agents.get(f"/api/v1/mcp-servers/{created.json()['id']}/tools", headers=headers)
    await answered_while_pending(agents, slow, headers, listing)


async def test_a_search_on_a_hanging_embedding_model_holds_no_connection(
    agents_one_connection, slow, token_issuer
):
    agents, headers = agents_one_connection, token_issuer.headers()
    provider = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={"kind": "openai", "name": "Slow", "base_url": f"{slow.base_url}/v1"},
    )
    assert provider.status_code == 201, provider.text
    kb = await agents.post(
        "/api/v1/knowledge-bases",
        headers=headers,
        json={
            "name": "Remote",
            "embedding_provider_id": provider.json()["id"],
            "embedding_model": "embed",
        },
    )
    assert kb.status_code == 201, kb.text
    search = agents.post(
        f"/api/v1/knowledge-bases/{kb.json()['id']}/search",
        headers=headers,
        json={"query": "anything", "mode": "vector"},
    )
    await answered_while_pending(agents, slow, headers, search)
    url = f"/api/v1/knowledge-bases/{kb.json()['id']}/search"
    answer = await agents.post(url, headers=headers, json={"query": "anything", "mode": "vector"})
    assert answer.status_code == 200 and answer.json()["results"] == [], answer.text


async def test_every_connection_has_the_statement_and_idle_transaction_timeouts(
    common_settings, token_issuer
):
    from sqlalchemy import text

    common = common_settings.model_copy(
        update={
            "jwks_url": token_issuer.jwks_url,
            "db_statement_timeout_ms": 1234,
            "db_idle_in_transaction_timeout_ms": 5678,
        }
    )
    app = create_app(
        AgentsSettings(
            common=common,
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
        )
    )
    async with app_client(app), app.state.sessionmaker() as session:
        assert await session.scalar(text("SHOW statement_timeout")) == "1234ms"
        assert await session.scalar(text("SHOW idle_in_transaction_session_timeout")) == "5678ms"
        # The knowledge search's transaction-local settings still apply under them.
        await session.execute(
            text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        )
        assert await session.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    assert common_settings.db_statement_timeout_ms == 30_000
    assert common_settings.db_idle_in_transaction_timeout_ms == 60_000


async def test_a_slow_upload_holds_no_connection(agents_one_connection, token_issuer):
    """A client that sends its document slowly: the route reads the body before its first
    query, so the only connection stays free meanwhile."""
    agents, headers = agents_one_connection, token_issuer.headers()
    kb = await agents.post("/api/v1/knowledge-bases", headers=headers, json={"name": "Docs"})
    assert kb.status_code == 201, kb.text
    slow = SlowServer()  # only its events: the upload's body waits on them

    async def body():
        yield b'{"text": "The first part, '
        await slow.hold()
        yield b'and the rest.", "filename": "slow.txt"}'

    upload = agents.post(
        f"/api/v1/knowledge-bases/{kb.json()['id']}/documents",
        headers={**headers, "content-type": "application/json"},
        content=body(),
    )
    await answered_while_pending(agents, slow, headers, upload)

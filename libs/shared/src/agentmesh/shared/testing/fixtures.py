"""Pytest fixtures shared by every service's tests: migrated schemas, settings, apps.

Loaded with ``-p agentmesh.shared.testing.fixtures``; the server fixtures
(``database_url``, ``nats_url``) come from ``agentmesh.shared.testing.plugin``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.shared.migrations import MIGRATING_SERVICES, upgrade_with_connection
from agentmesh.shared.settings import CommonSettings


def upgrade_with_connection_of(service: str) -> Any:
    return lambda sync_conn: upgrade_with_connection(service, sync_conn)


#: Secrets every test suite shares: the test database is shared too, and a signing key
#: written with one key-encryption key must stay readable by every other test.
TEST_KEY_ENCRYPTION_KEY = "test-key-encryption-key-5f2a9c1e7b3d4a6f8e0c2b4d6f8a0c2e"
TEST_INTERNAL_TOKEN = "test-internal-token-1b3d5f7a9c2e4f6a8b0d2f4a6c8e0b2d"  # noqa: S105


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    """The test database with every service's migrations applied (``alembic upgrade``)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            for service in MIGRATING_SERVICES:
                await conn.run_sync(upgrade_with_connection_of(service))
    finally:
        await engine.dispose()
    return database_url


@pytest.fixture
def common_settings(migrated_database_url: str, nats_url: str) -> CommonSettings:
    """Shared settings pointing at the test servers, with fast sweeps and retries."""
    return CommonSettings(
        env="test",
        database_url=migrated_database_url,
        nats_url=nats_url,
        log_json=True,
        outbox_sweep_seconds=0.5,
        consumer_backoff_seconds=0.05,
    )


def random_ip() -> str:
    """A random private IPv4 address (never contacted: it only labels the test client)."""
    octets = [random.randint(0, 255), random.randint(0, 255), random.randint(1, 254)]  # noqa: S311
    return "10.{}.{}.{}".format(*octets)


@contextlib.asynccontextmanager
async def app_client(
    app: FastAPI, base_url: str = "http://testserver", client_ip: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and give an in-process client for it.

    Each client gets its own random source IP unless one is given, so per-IP limits
    of one test don't leak into another."""
    client_ip = client_ip or random_ip()
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(client_ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` over real HTTP on loopback (uvicorn, same loop); yields its base URL."""
    port = port or _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server exited during start-up")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


class TokenIssuer:
    """Signs access tokens for any user, verifiable through a JWKS served over HTTP.

    For service tests that need callers but not the identity service."""

    def __init__(self, jwks_url: str, key: Any) -> None:
        self.jwks_url = jwks_url
        self.key = key

    def token(
        self,
        user_id: Any = None,
        *,
        roles: tuple[str, ...] = ("user",),
        workspace_id: Any = None,
        workspace_role: str = "owner",
        **claims: Any,
    ) -> tuple[str, Any]:
        """A signed access token (and its user id) for ``user_id`` (a new one if None),
        bound to ``workspace_id`` with ``workspace_role`` (by default the user's personal
        workspace, whose id is the user's, as its owner). ``wid=None`` leaves it unbound."""
        import uuid as _uuid

        from agentmesh.shared.testing.jwt_keys import make_claims

        user_id = user_id or _uuid.uuid4()
        claims.setdefault("wid", str(workspace_id or user_id))
        claims.setdefault("wrole", workspace_role if claims["wid"] else None)
        return self.key.sign(make_claims(user_id, roles=roles, **claims)), user_id

    def headers(self, user_id: Any = None, **kwargs: Any) -> dict[str, str]:
        token, _ = self.token(user_id, **kwargs)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
async def token_issuer() -> AsyncIterator[TokenIssuer]:
    """A JWKS endpoint on loopback and a key to sign tokens with (session-wide)."""
    from agentmesh.shared.testing.jwt_keys import SigningKey, jwks

    key = SigningKey()
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def published() -> dict[str, Any]:
        return jwks([key])

    async with serve_app(app) as base_url:
        yield TokenIssuer(f"{base_url}/.well-known/jwks.json", key)

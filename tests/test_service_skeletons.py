"""Each service boots on real Postgres and NATS with health, AsyncAPI and problem+json."""

from __future__ import annotations

import importlib

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.shared.events.contracts import CATALOG
from agentmesh.shared.settings import CommonSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    serve_app,
)

DB_SERVICES = ["identity", "agents", "chat"]
#: Secrets a service refuses to start without (outside development).
TEST_SECRETS = {
    "identity": {
        "key_encryption_key": TEST_KEY_ENCRYPTION_KEY,
        "internal_token": TEST_INTERNAL_TOKEN,
    },
    "agents": {
        "provider_encryption_key": TEST_KEY_ENCRYPTION_KEY,
        "internal_token": TEST_INTERNAL_TOKEN,
    },
    "chat": {"internal_token": TEST_INTERNAL_TOKEN},
}


def build_app(service: str, common: CommonSettings):
    module = importlib.import_module(f"agentmesh.{service}.app")
    settings_module = importlib.import_module(f"agentmesh.{service}.settings")
    settings_cls = getattr(settings_module, f"{service.capitalize()}Settings")
    return module.create_app(settings_cls(common=common, **TEST_SECRETS.get(service, {})))


@pytest.mark.parametrize("service", DB_SERVICES)
async def test_migrations_create_the_schema_with_its_own_version_table(
    service, migrated_database_url
):
    engine = create_async_engine(migrated_database_url)
    try:
        async with engine.connect() as conn:
            tables = set(
                (
                    await conn.execute(
                        text("SELECT tablename FROM pg_tables WHERE schemaname = :s"),
                        {"s": service},
                    )
                ).scalars()
            )
            version = await conn.scalar(
                text(f'SELECT version_num FROM "{service}".alembic_version')
            )
            public_versions = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_tables WHERE tablename = 'alembic_version' "
                    "AND schemaname = 'public'"
                )
            )
    finally:
        await engine.dispose()
    assert {"outbox", "inbox", "alembic_version"} <= tables
    assert version
    assert public_versions == 0


@pytest.mark.parametrize("service", DB_SERVICES)
async def test_service_is_ready_and_documents_its_events(service, common_settings):
    app = build_app(service, common_settings)
    async with app_client(app) as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
        asyncapi = await client.get("/asyncapi")
        missing = await client.get("/no/such/path", headers={"X-Request-ID": "req-123"})
    assert live.status_code == 200
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "nats": "ok"}}
    document = asyncapi.json()
    assert document["asyncapi"].startswith("3.")
    channels = {ch["address"] for ch in document["channels"].values()}
    published = {s for s in CATALOG if s.startswith(service + ".")}
    assert published <= channels
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["x-request-id"] == "req-123"
    assert missing.json()["request_id"] == "req-123"


async def test_readiness_reports_an_unreachable_database(common_settings):
    broken = common_settings.model_copy(
        update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"}
    )
    app = build_app("chat", broken)
    async with app_client(app) as client:
        ready = await client.get("/health/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["nats"] == "ok"
    assert body["checks"]["database"].startswith("unavailable")


async def test_gateway_ready_aggregates_every_upstream(common_settings):
    from agentmesh.gateway.app import create_app
    from agentmesh.gateway.settings import GatewaySettings

    async with (
        serve_app(build_app("identity", common_settings)) as identity_url,
        serve_app(build_app("agents", common_settings)) as agents_url,
    ):
        chat = serve_app(build_app("chat", common_settings))
        chat_url = await chat.__aenter__()
        gateway = create_app(
            GatewaySettings(
                common=common_settings,
                internal_token=TEST_INTERNAL_TOKEN,
                identity_url=identity_url,
                agents_url=agents_url,
                chat_url=chat_url,
            )
        )
        async with app_client(gateway) as client:
            all_up = await client.get("/health/ready")
            await chat.__aexit__(None, None, None)
            chat_down = await client.get("/health/ready")
            unknown = await client.get("/api/v1/nothing-here")
    assert all_up.status_code == 200, all_up.text
    assert all_up.json()["checks"] == {"identity": "ok", "agents": "ok", "chat": "ok"}
    assert chat_down.status_code == 503
    assert chat_down.json()["checks"]["identity"] == "ok"
    assert chat_down.json()["checks"]["chat"].startswith("unavailable")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_a_service_starts_and_takes_writes_while_nats_is_down(common_settings):
    from agentmesh.shared.local.ports import free_port

    offline = common_settings.model_copy(
        update={"nats_url": f"nats://127.0.0.1:{free_port()}", "nats_connect_wait_seconds": 0.5}
    )
    app = build_app("identity", offline)
    async with app_client(app) as client:
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["nats"].startswith("unavailable")
        import uuid

        email = f"offline-{uuid.uuid4().hex[:8]}@example.com"
        registered = await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": "correct horse battery staple", "name": "Offline"},
        )
        assert registered.status_code == 201  # the event waits in the outbox


async def test_the_gateway_serves_while_nats_is_down(common_settings):
    from agentmesh.gateway.app import create_app
    from agentmesh.gateway.settings import GatewaySettings
    from agentmesh.shared.local.ports import free_port

    offline = common_settings.model_copy(
        update={"nats_url": f"nats://127.0.0.1:{free_port()}", "nats_connect_wait_seconds": 0.5}
    )
    async with serve_app(build_app("identity", common_settings)) as identity_url:
        gateway = create_app(
            GatewaySettings(
                common=offline, identity_url=identity_url, internal_token=TEST_INTERNAL_TOKEN
            )
        )
        async with app_client(gateway) as client:
            jwks = await client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and jwks.json()["keys"]

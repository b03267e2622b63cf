from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import select

from agentmesh.agents.app import create_app
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)


@pytest.fixture
async def agents(common_settings, token_issuer):
    """The agents app (NATS, relay, erasure consumer) with tokens from ``token_issuer``."""
    common = common_settings.model_copy(update={"jwks_url": token_issuer.jwks_url})
    app = create_app(
        AgentsSettings(
            common=common,
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
        )
    )
    async with app_client(app) as client:
        client.app = app
        yield client


@pytest.fixture
def agents_with(common_settings, token_issuer):
    """``async with agents_with(**settings) as client``: an agents app with other settings
    (e.g. ``allowed_private_hosts`` for a local provider started first)."""

    @contextlib.asynccontextmanager
    async def make(**overrides):
        common = common_settings.model_copy(update={"jwks_url": token_issuer.jwks_url})
        app = create_app(
            AgentsSettings(
                common=common,
                provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                internal_token=TEST_INTERNAL_TOKEN,
                **overrides,
            )
        )
        async with app_client(app) as client:
            client.app = app
            yield client

    return make


@pytest.fixture
def outbox_events(agents):
    """``await outbox_events(subject, subject_id)`` -> envelopes in the agents outbox."""

    async def fetch(subject: str, subject_id: str) -> list[dict]:
        outbox = agents.app.state.runtime.tables.outbox
        async with agents.app.state.sessionmaker() as session:
            rows = await session.scalars(
                select(outbox.c.envelope)
                .where(outbox.c.subject == subject, outbox.c.subject_id == str(subject_id))
                .order_by(outbox.c.id)
            )
            return list(rows)

    return fetch

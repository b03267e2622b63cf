from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select, update

from agentmesh.identity.app import create_app
from agentmesh.identity.settings import IdentitySettings
from agentmesh.identity.users.models import User
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)

PASSWORD = "correct horse battery staple"


@pytest.fixture
def identity_settings(common_settings) -> IdentitySettings:
    return IdentitySettings(
        common=common_settings,
        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
        internal_token=TEST_INTERNAL_TOKEN,
    )


@pytest.fixture
async def identity(identity_settings):
    """The identity app running its lifespan (NATS, relay, consumers), with a client."""
    app = create_app(identity_settings)
    async with app_client(app) as client:
        client.app = app
        yield client


@dataclass
class Account:
    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def login(identity):
    """``await login(email, password)`` -> the token pair (asserting 200)."""

    async def do(email: str, password: str = PASSWORD) -> dict:
        return await _login(identity, email, password)

    return do


@pytest.fixture
def make_account(identity):
    """Register and log in a fresh user; ``admin=True`` promotes them first."""

    async def make(*, admin: bool = False, name: str = "Test User") -> Account:
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        response = await identity.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": name}
        )
        assert response.status_code == 201, response.text
        user = response.json()
        if admin:
            async with identity.app.state.sessionmaker() as session, session.begin():
                await session.execute(
                    update(User).where(User.email == email).values(roles=["admin", "user"])
                )
        tokens = await _login(identity, email)
        return Account(user["id"], email, PASSWORD, tokens["access_token"], tokens["refresh_token"])

    return make


@pytest.fixture
def outbox_events(identity):
    """``await outbox_events(subject, subject_id)`` -> envelopes identity's outbox holds."""

    async def fetch(subject: str, subject_id: str) -> list[dict]:
        outbox = identity.app.state.runtime.tables.outbox
        async with identity.app.state.sessionmaker() as session:
            rows = await session.scalars(
                select(outbox.c.envelope)
                .where(outbox.c.subject == subject, outbox.c.subject_id == subject_id)
                .order_by(outbox.c.id)
            )
            return list(rows)

    return fetch

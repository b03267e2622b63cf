from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select, update

from agentmesh.identity.app import create_app
from agentmesh.identity.oidc.config import OidcProviders
from agentmesh.identity.settings import IdentitySettings
from agentmesh.identity.users.models import User
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    serve_app,
)
from agentmesh.shared.testing.oidc_provider import MockProvider, mock_provider, resigning_app

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


# ---------------------------------------------------------------- OpenID Connect

RETURN_URL = "https://app.example.test/signed-in"


@pytest.fixture(scope="session")
async def oidc_provider():
    """A real OpenID Connect provider (oidc-provider-mock) on loopback, and a relay in
    front of it that re-signs ID tokens with another key."""
    async with AsyncExitStack() as stack:
        provider = await stack.enter_async_context(mock_provider())
        provider.relays = {}
        for mode in ("other-key", "hs256", "none"):
            relay = resigning_app(
                provider.url, mode=mode, secret="test-client-secret-9d2c4e6f8a0b1c3d5e7f9a1b"
            )
            provider.relays[mode] = await stack.enter_async_context(serve_app(relay))
        yield provider


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture
def oidc_settings(identity_settings, oidc_provider) -> IdentitySettings:
    def config(issuer: str, client_id: str, **extra) -> dict:
        return {
            "issuer": issuer,
            "client_id": client_id,
            "client_secret": "test-client-secret-9d2c4e6f8a0b1c3d5e7f9a1b",
            **extra,
        }

    return identity_settings.model_copy(
        update={
            "oidc_providers": OidcProviders.model_validate(
                {
                    "providers": {
                        "corp": config(oidc_provider.url, "corp-client", display_name="Corp SSO"),
                        "acme": config(
                            oidc_provider.url, "acme-client", allowed_domains=["acme.example.com"]
                        ),
                        "evil": config(oidc_provider.relays["other-key"], "evil-client"),
                        "hs256": config(oidc_provider.relays["hs256"], "hs-client"),
                        "unsigned": config(oidc_provider.relays["none"], "none-client"),
                    }
                }
            ),
            "oidc_return_urls": [RETURN_URL],
            "allowed_private_hosts": tuple(
                f"127.0.0.1:{_port(url)}"
                for url in (oidc_provider.url, *oidc_provider.relays.values())
            ),
        }
    )


@pytest.fixture
async def oidc_identity(oidc_settings):
    """Identity with providers ``corp``, ``acme`` (acme.example.com only), and three whose
    ID tokens are forged: ``evil`` (signed by a key the provider does not publish),
    ``hs256`` (HMAC with the client secret) and ``unsigned`` (``alg: none``)."""
    app = create_app(oidc_settings)
    async with app_client(app) as client:
        client.app = app
        yield client


@dataclass
class Browser:
    """Signs in as a browser would: authorize, the provider's form, the callback."""

    client: httpx.AsyncClient
    provider: MockProvider

    async def authorize(self, name: str = "corp", **params: str) -> httpx.Response:
        return await self.client.get(f"/api/v1/auth/oidc/{name}/authorize", params=params)

    async def to_callback(self, sub: str, name: str = "corp", **params: str) -> str:
        """The callback URL the provider sends the browser to, after signing in."""
        started = await self.authorize(name, **params)
        assert started.status_code == 302, started.text
        return await self.provider.sign_in(started.headers["location"], sub)

    async def sign_in(self, sub: str, name: str = "corp", **params: str) -> httpx.Response:
        return await self.client.get(await self.to_callback(sub, name, **params))


@pytest.fixture
def browser(oidc_identity, oidc_provider) -> Browser:
    return Browser(oidc_identity, oidc_provider)


def new_sub() -> str:
    return f"sub-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def oidc_return_url() -> str:
    return RETURN_URL

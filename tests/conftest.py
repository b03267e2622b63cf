"""The platform over real HTTP, for the cross-service tests (``system/``, ``e2e/``).

Identity, agents and chat are each served by uvicorn on loopback with the gateway in
front; identity issues the tokens and the others verify them against its JWKS. Tests
talk to the gateway only, as a user (or an SDK) would.

``service_options`` (per service, passed to its ``create_app`` as ``ServiceRuntime``
options) is the hook a test directory overrides, e.g. to give each service a tracer
provider of its own.
"""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentmesh.agents.app import create_app as create_agents
from agentmesh.agents.settings import AgentsSettings
from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.settings import ChatSettings
from agentmesh.gateway.app import create_app as create_gateway
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    serve_app,
)

PASSWORD = "correct horse battery staple"
#: Generous limits: these tests check behaviour, not the gateway's rate limits.
GENEROUS = {"rate_limit": {"rate": 100, "burst": 200}}
SERVICES = ("identity", "agents", "chat", "gateway")


@pytest.fixture
def service_options() -> dict[str, dict[str, Any]]:
    """Extra ``ServiceRuntime`` options per service (none by default)."""
    return {}


@pytest.fixture
async def gateway(common_settings, service_options):
    """A client of the gateway (``base_url`` is its real HTTP address) in front of
    identity, agents and chat, each served over HTTP."""
    options = {name: service_options.get(name, {}) for name in SERVICES}
    async with AsyncExitStack() as stack:
        identity_url = await stack.enter_async_context(
            serve_app(
                create_identity(
                    IdentitySettings(
                        common=common_settings,
                        key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                        internal_token=TEST_INTERNAL_TOKEN,
                    ),
                    **options["identity"],
                )
            )
        )
        common = common_settings.model_copy(
            update={"jwks_url": f"{identity_url}/.well-known/jwks.json"}
        )
        agents_url = await stack.enter_async_context(
            serve_app(
                create_agents(
                    AgentsSettings(
                        common=common,
                        provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                        internal_token=TEST_INTERNAL_TOKEN,
                        allow_private_network=True,
                    ),
                    **options["agents"],
                )
            )
        )
        chat_url = await stack.enter_async_context(
            serve_app(
                create_chat(
                    ChatSettings(
                        common=common,
                        internal_token=TEST_INTERNAL_TOKEN,
                        allow_private_network=True,
                    ),
                    **options["chat"],
                )
            )
        )
        gateway_app = create_gateway(
            GatewaySettings(
                common=common_settings,
                identity_url=identity_url,
                agents_url=agents_url,
                chat_url=chat_url,
                internal_token=TEST_INTERNAL_TOKEN,
                groups={
                    name: GENEROUS
                    for name in ("auth", "identity", "agents", "knowledge", "chat", "chat_runs")
                },
                limits_scope=uuid.uuid4().hex,  # limits shared with no other test
            ),
            **options["gateway"],
        )
        gateway_url = await stack.enter_async_context(serve_app(gateway_app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=gateway_url, timeout=30)
        )
        client.app = gateway_app  # type: ignore[attr-defined]  # e.g. its breakers' state
        yield client


@dataclass
class Account:
    """A registered, logged-in user."""

    user_id: str
    email: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Signup:
    """Registers and logs in users through the gateway: ``await signup("Ada")``."""

    def __init__(self, gateway: httpx.AsyncClient) -> None:
        self.gateway = gateway

    async def __call__(self, name: str = "Test User") -> Account:
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        body = {"email": email, "password": PASSWORD, "name": name}
        registered = await self.gateway.post("/api/v1/auth/register", json=body)
        assert registered.status_code == 201, registered.text
        return await self.login(Account(registered.json()["id"], email, ""))

    async def login(self, account: Account) -> Account:
        """A fresh access token (e.g. carrying roles granted since the last one)."""
        body = {"email": account.email, "password": PASSWORD}
        login = await self.gateway.post("/api/v1/auth/login", json=body)
        assert login.status_code == 200, login.text
        return Account(account.user_id, account.email, login.json()["access_token"])


@pytest.fixture
def signup(gateway) -> Signup:
    """Register and log in a new user through the gateway."""
    return Signup(gateway)

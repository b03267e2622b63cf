"""``agentmesh secrets rotate``: provider keys, MCP headers (agents) and signing keys
(identity) move to a new encryption key, run as the operator would, and read back.

The test database is shared by the whole session, so the test rotates back to the test
key at the end (which also proves a second rotation works)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid

import nats
from sqlalchemy import select

from agentmesh.agents.app import create_app as create_agents
from agentmesh.agents.mcp.models import McpServer
from agentmesh.agents.providers.models import Provider
from agentmesh.agents.settings import AgentsSettings
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.keys.models import SigningKey
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)

OLD = TEST_KEY_ENCRYPTION_KEY
NEW = secrets.token_urlsafe(32)
PROVIDER_KEY = "sk-rotate-0123456789abcdefWXYZ"
MCP_AUTH = "Bearer mcp-rotate-0123456789abcdef"
PASSWORD = "correct horse battery staple"


def rotate(common, keys: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        {
            "AGENTMESH_DATABASE_URL": common.database_url,
            "AGENTMESH_ENV": "test",
            "AGENTMESH_INTERNAL_TOKEN": TEST_INTERNAL_TOKEN,
            "IDENTITY_KEY_ENCRYPTION_KEY": keys,
            "AGENTS_PROVIDER_ENCRYPTION_KEY": keys,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "agentmesh.shared.cli", "secrets", "rotate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def agents_app(common, keys: str):
    return create_agents(
        AgentsSettings(
            common=common,
            provider_encryption_key=keys,
            internal_token=TEST_INTERNAL_TOKEN,
            allow_private_network=True,
        )
    )


def identity_app(common, keys: str):
    return create_identity(
        IdentitySettings(common=common, key_encryption_key=keys, internal_token=TEST_INTERNAL_TOKEN)
    )


async def read_back(common, keys: str, owner: uuid.UUID, provider_id: str, server_id: str):
    """The provider key and MCP header as chat gets them (the RPCs), with ``keys``."""
    async with app_client(agents_app(common, keys)):
        nc = await nats.connect(common.nats_url)
        try:
            headers = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}
            credentials = await nc.request(
                "agents.rpc.provider.credentials",
                json.dumps({"provider_id": provider_id, "user_id": str(owner)}).encode(),
                timeout=10,
                headers=headers,
            )
            connection = await nc.request(
                "agents.rpc.mcp.connection",
                json.dumps({"server_id": server_id, "user_id": str(owner)}).encode(),
                timeout=10,
                headers=headers,
            )
        finally:
            await nc.close()
    return json.loads(credentials.data), json.loads(connection.data)


async def login_works(common, keys: str, email: str) -> None:
    """Identity signs a token with its (decrypted) active signing key, and accepts it."""
    async with app_client(identity_app(common, keys)) as identity:
        login = await identity.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        me = await identity.get(
            "/api/v1/users/me",
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
        assert me.status_code == 200, me.text


async def stored_key_ids(sessionmaker) -> set[str | None]:
    async with sessionmaker() as session:
        blobs = [
            *await session.scalars(select(Provider.api_key_encrypted)),
            *await session.scalars(select(McpServer.auth_header_value_encrypted)),
            *await session.scalars(select(SigningKey.private_key_encrypted)),
        ]
    return {SecretBox.key_id_of(bytes(blob)) for blob in blobs if blob is not None}


async def test_rotate_re_encrypts_everything_and_it_reads_back(common_settings, token_issuer):
    common = common_settings.model_copy(update={"jwks_url": token_issuer.jwks_url})
    owner = uuid.uuid4()
    email = f"rotate-{uuid.uuid4().hex[:8]}@example.com"

    # Data written under the old key only.
    async with app_client(identity_app(common, OLD)) as identity:
        registered = await identity.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "R"}
        )
        assert registered.status_code == 201, registered.text
    app = agents_app(common, OLD)
    async with app_client(app) as agents:
        headers = token_issuer.headers(owner)
        provider = await agents.post(
            "/api/v1/providers",
            json={
                "kind": "openai",
                "name": "P",
                "api_key": PROVIDER_KEY,
                "base_url": "http://127.0.0.1:9/v1",
            },
            headers=headers,
        )
        assert provider.status_code == 201, provider.text
        server = await agents.post(
            "/api/v1/mcp-servers",
            json={"name": "T", "url": "http://127.0.0.1:9/mcp", "auth_header_value": MCP_AUTH},
            headers=headers,
        )
        assert server.status_code == 201, server.text
        sessionmaker = app.state.sessionmaker
    ids = provider.json()["id"], server.json()["id"]

    try:
        # The new key is configured first: old ciphertexts are still readable.
        creds, connection = await read_back(common, f"{NEW},{OLD}", owner, *ids)
        assert creds["api_key"] == PROVIDER_KEY
        assert connection["headers"] == {"Authorization": MCP_AUTH}
        await login_works(common, f"{NEW},{OLD}", email)

        result = rotate(common, f"{NEW},{OLD}")
        assert result.returncode == 0, result.stderr
        for what in ("identity signing keys", "agents provider keys", "agents MCP headers"):
            assert what in result.stdout

        # Everything is now under the new key (each use derives its own key, so two ids)...
        agents_new = SecretBox(NEW, purpose="agentmesh-agents-provider-keys").current_key_id
        identity_new = SecretBox(NEW, purpose="agentmesh-identity-kek").current_key_id
        assert await stored_key_ids(sessionmaker) == {agents_new, identity_new}
        # ...and readable with only the new key.
        creds, connection = await read_back(common, NEW, owner, *ids)
        assert creds["api_key"] == PROVIDER_KEY
        assert connection["headers"] == {"Authorization": MCP_AUTH}
        await login_works(common, NEW, email)
        # A rerun has nothing left to do.
        again = rotate(common, f"{NEW},{OLD}")
        assert again.returncode == 0 and "agents provider keys: 0 re-encrypted" in again.stdout

        # The old key alone cannot read them any more: a clean one-line failure.
        wrong = rotate(common, OLD)
        assert wrong.returncode == 1
        assert "no longer lists" in wrong.stderr and "Traceback" not in wrong.stderr
    finally:
        restored = rotate(common, f"{OLD},{NEW}")
        assert restored.returncode == 0, restored.stderr
    agents_old = SecretBox(OLD, purpose="agentmesh-agents-provider-keys").current_key_id
    identity_old = SecretBox(OLD, purpose="agentmesh-identity-kek").current_key_id
    assert await stored_key_ids(sessionmaker) == {agents_old, identity_old}

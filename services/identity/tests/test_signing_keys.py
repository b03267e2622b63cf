"""JWKS, EdDSA tokens verified by the shared verifier, rotation, keys encrypted at rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from agentmesh.identity.app import create_app
from agentmesh.identity.crypto import KeyEncryption
from agentmesh.identity.keys.models import SigningKey
from agentmesh.shared.auth import JWTVerifier
from agentmesh.shared.errors import Unauthorized
from agentmesh.shared.testing.fixtures import app_client, serve_app


@pytest.fixture
async def served(identity_settings):
    """Identity over real HTTP (so the shared verifier fetches the JWKS for real)."""
    app = create_app(identity_settings)
    async with serve_app(app) as base_url, app_client(app) as client:
        client.app = app
        yield base_url, client


async def register_and_login(client) -> dict:
    import uuid

    email = f"k-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "correct horse battery staple", "name": "K"}
    assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
    response = await client.post("/api/v1/auth/login", json=body)
    return response.json()


async def test_tokens_verify_with_the_shared_verifier(served):
    base_url, client = served
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"] and all(
        k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["kid"] and "d" not in k
        for k in jwks["keys"]
    )
    tokens = await register_and_login(client)
    verifier = JWTVerifier(f"{base_url}/.well-known/jwks.json", "agentmesh-identity", "agentmesh")
    try:
        principal = await verifier.verify(tokens["access_token"])
    finally:
        await verifier.aclose()
    assert principal.roles == frozenset({"user"})
    remaining = principal.expires_at - datetime.now(UTC)
    assert timedelta(minutes=14) < remaining <= timedelta(minutes=15)


async def test_rotation_keeps_old_tokens_valid_until_they_expire(served):
    base_url, client = served
    app = client.app
    old_tokens = await register_and_login(client)
    async with app.state.sessionmaker() as session, session.begin():
        new_key = await app.state.keys.rotate(session)
    new_tokens = await register_and_login(client)
    import jwt

    assert jwt.get_unverified_header(new_tokens["access_token"])["kid"] == new_key.kid
    old_kid = jwt.get_unverified_header(old_tokens["access_token"])["kid"]
    assert old_kid != new_key.kid
    kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {old_kid, new_key.kid} <= kids

    verifier = JWTVerifier(f"{base_url}/.well-known/jwks.json", "agentmesh-identity", "agentmesh")
    try:
        await verifier.verify(old_tokens["access_token"])
        await verifier.verify(new_tokens["access_token"])
        # Once the old key's last token has expired, it leaves the JWKS.
        async with app.state.sessionmaker() as session, session.begin():
            await session.execute(
                update(SigningKey)
                .where(SigningKey.kid == old_kid)
                .values(retired_at=datetime.now(UTC) - timedelta(hours=1))
            )
        kids = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
        assert old_kid not in kids and new_key.kid in kids
        fresh = JWTVerifier(f"{base_url}/.well-known/jwks.json", "agentmesh-identity", "agentmesh")
        with pytest.raises(Unauthorized):
            await fresh.verify(old_tokens["access_token"])
        await fresh.aclose()
    finally:
        await verifier.aclose()


async def test_private_keys_are_encrypted_at_rest(served, identity_settings):
    _, client = served
    async with client.app.state.sessionmaker() as session:
        blobs = list(await session.scalars(select(SigningKey.private_key_encrypted)))
    assert blobs
    for blob in blobs:
        assert b"PRIVATE KEY" not in blob
    right = KeyEncryption(identity_settings.key_encryption_key.get_secret_value())
    assert b"PRIVATE KEY" in right.decrypt(blobs[0])
    with pytest.raises(RuntimeError):
        KeyEncryption("some-other-key-encryption-key-0000").decrypt(blobs[0])

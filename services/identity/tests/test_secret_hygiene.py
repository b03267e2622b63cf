"""Failed logins are pruned after their window and erased with the account; erased
emails are kept only as a keyed HMAC (legacy bare SHA-256 rows are upgraded)."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from pydantic import SecretStr
from sqlalchemy import delete, func, select

from agentmesh.identity.app import create_app
from agentmesh.identity.auth.models import LoginFailure
from agentmesh.identity.crypto import EmailHasher
from agentmesh.identity.erasure.models import Erasure
from agentmesh.shared.crypto import derive_key
from agentmesh.shared.testing.backbone import wait_until
from agentmesh.shared.testing.fixtures import TEST_KEY_ENCRYPTION_KEY, app_client


async def failures(sessionmaker, email: str) -> int:
    async with sessionmaker() as session:
        return await session.scalar(
            select(func.count()).select_from(LoginFailure).where(LoginFailure.email == email)
        )


async def test_failed_logins_are_pruned_after_their_window(identity_settings):
    settings = identity_settings.model_copy(update={"login_failure_window_seconds": 1})
    app = create_app(settings)
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    async with app_client(app) as identity:
        for _ in range(2):
            wrong = await identity.post(
                "/api/v1/auth/login", json={"email": email, "password": "not the password"}
            )
            assert wrong.status_code == 401
        assert await failures(app.state.sessionmaker, email) == 2
        await wait_until(lambda: _none_left(app.state.sessionmaker, email), timeout=15)


async def _none_left(sessionmaker, email: str) -> bool:
    return await failures(sessionmaker, email) == 0


async def test_erasure_removes_failed_logins_and_keys_the_email_hash(identity, make_account):
    account = await make_account()
    for _ in range(2):
        wrong = await identity.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "not the password"}
        )
        assert wrong.status_code == 401
    sessionmaker = identity.app.state.sessionmaker
    assert await failures(sessionmaker, account.email) == 2

    erased = await identity.delete("/api/v1/users/me", headers=account.headers)
    assert erased.status_code == 202
    assert await failures(sessionmaker, account.email) == 0
    async with sessionmaker() as session:
        stored = await session.scalar(
            select(Erasure.email_hash).where(Erasure.user_id == uuid.UUID(account.id))
        )
    bare = hashlib.sha256(account.email.encode()).digest()
    assert bare.hex() not in stored
    # The key is derived from the key-encryption key when IDENTITY_EMAIL_HASH_KEY is unset.
    key = derive_key(TEST_KEY_ENCRYPTION_KEY, "agentmesh-identity-email-hash")
    assert stored == "hmac-sha256:" + hmac.new(key, bare, hashlib.sha256).hexdigest()


async def test_an_explicit_key_is_used_and_legacy_digests_are_upgraded(identity_settings):
    settings = identity_settings.model_copy(
        update={"email_hash_key": SecretStr("an-email-hash-key-7c1e9a3b5d2f4a6c8e0b2d4f6a8c0e2b")}
    )
    legacy_user, email = uuid.uuid4(), f"old-{uuid.uuid4().hex[:8]}@example.com"
    bare = hashlib.sha256(email.encode()).hexdigest()
    app = create_app(settings)
    async with app.state.sessionmaker() as session, session.begin():
        session.add(Erasure(user_id=legacy_user, email_hash=bare))
    try:
        # Start-up upgrades the legacy row.
        async with app_client(app), app.state.sessionmaker() as session:
            stored = await session.scalar(
                select(Erasure.email_hash).where(Erasure.user_id == legacy_user)
            )
        hasher = EmailHasher(settings.email_hash_key.get_secret_value(), "")
        assert stored == hasher.hash(email) and stored != bare
        key = b"an-email-hash-key-7c1e9a3b5d2f4a6c8e0b2d4f6a8c0e2b"
        digest = hmac.new(key, bytes.fromhex(bare), hashlib.sha256).hexdigest()
        assert stored == f"hmac-sha256:{digest}"
    finally:
        async with app.state.sessionmaker() as session, session.begin():
            await session.execute(delete(Erasure).where(Erasure.user_id == legacy_user))
        await app.state.runtime.engine.dispose()

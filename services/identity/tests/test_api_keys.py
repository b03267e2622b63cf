"""API key life cycle and the gateway-only exchange."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import update

from agentmesh.identity.api_keys.models import ApiKey
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN

KEYS = "/api/v1/api-keys"
EXCHANGE = "/internal/api-keys/exchange"
INTERNAL = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}


async def create_key(identity, account, **body):
    body = {"name": "ci", "scopes": ["chat"], **body}
    response = await identity.post(KEYS, json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_key_is_shown_once_and_only_its_prefix_is_listed(
    identity, make_account, outbox_events
):
    account = await make_account()
    created = await create_key(identity, account, scopes=["chat", "agents:read"])
    key = created["key"]
    assert key.startswith(f"{created['prefix']}") and created["prefix"].startswith("am_")
    assert set(created) >= {"id", "name", "scopes", "expires_at", "key"}
    listing = await identity.get(KEYS, headers=account.headers)
    assert listing.status_code == 200
    secret = key.split("_", 2)[2]
    assert secret not in listing.text
    [item] = listing.json()["items"]
    assert item["prefix"] == created["prefix"] and "key" not in item
    assert item["scopes"] == ["agents:read", "chat"]
    events = await outbox_events("identity.apikey.created", key.split("_")[1])
    assert events and "key" not in events[0]["data"] and secret not in str(events[0])


async def test_exchange_gives_a_short_lived_scoped_token(identity, make_account):
    account = await make_account()
    created = await create_key(identity, account)
    response = await identity.post(EXCHANGE, json={"key": created["key"]}, headers=INTERNAL)
    assert response.status_code == 200, response.text
    body = response.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["scopes"] == ["chat"] and claims["sub"] == account.id
    assert claims["akid"] == body["api_key_id"]
    assert 0 < body["expires_in"] <= 300
    token_header = {"Authorization": f"Bearer {body['access_token']}"}
    me = await identity.get("/api/v1/users/me", headers=token_header)
    assert me.status_code == 200
    listing = (await identity.get(KEYS, headers=account.headers)).json()["items"]
    assert listing[0]["last_used_at"] is not None


async def test_exchange_needs_the_service_credential(identity, make_account):
    account = await make_account()
    created = await create_key(identity, account)
    assert (await identity.post(EXCHANGE, json={"key": created["key"]})).status_code == 401
    wrong = await identity.post(
        EXCHANGE, json={"key": created["key"]}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    user_token = await identity.post(
        EXCHANGE, json={"key": created["key"]}, headers=account.headers
    )
    assert user_token.status_code == 401


async def test_revoked_expired_and_malformed_keys_are_refused(
    identity, make_account, outbox_events
):
    account = await make_account()
    revoked = await create_key(identity, account)
    response = await identity.delete(f"{KEYS}/{revoked['id']}", headers=account.headers)
    assert response.status_code == 204
    assert (
        await identity.post(EXCHANGE, json={"key": revoked["key"]}, headers=INTERNAL)
    ).status_code == 401
    assert await outbox_events("identity.apikey.revoked", revoked["key"].split("_")[1])

    expiring = await create_key(
        identity, account, expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    async with identity.app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == uuid.UUID(expiring["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (
        await identity.post(EXCHANGE, json={"key": expiring["key"]}, headers=INTERNAL)
    ).status_code == 401
    for bad in ("am_nope", "sk-123", expiring["key"][:-3] + "xyz"):
        assert (
            await identity.post(EXCHANGE, json={"key": bad}, headers=INTERNAL)
        ).status_code == 401


async def test_past_expiry_and_bad_scopes_are_422(identity, make_account):
    account = await make_account()
    past = await identity.post(
        KEYS, json={"name": "x", "expires_at": "2000-01-01T00:00:00Z"}, headers=account.headers
    )
    assert past.status_code == 422
    scopes = await identity.post(
        KEYS, json={"name": "x", "scopes": ["NOT VALID"]}, headers=account.headers
    )
    assert scopes.status_code == 422


async def test_other_users_cannot_revoke_my_key(identity, make_account):
    owner = await make_account()
    other = await make_account()
    created = await create_key(identity, owner)
    response = await identity.delete(f"{KEYS}/{created['id']}", headers=other.headers)
    assert response.status_code == 404
    assert len((await identity.get(KEYS, headers=owner.headers)).json()["items"]) == 1
    assert (await identity.get(KEYS, headers=other.headers)).json()["items"] == []


async def test_an_api_key_cannot_manage_the_account(identity, make_account):
    """A key (whatever its scopes) must not mint keys, change the password or erase."""
    account = await make_account(admin=True)
    created = await create_key(identity, account, scopes=["agents:read"])
    exchanged = await identity.post(EXCHANGE, json={"key": created["key"]}, headers=INTERNAL)
    key_token = {"Authorization": f"Bearer {exchanged.json()['access_token']}"}
    assert (await identity.get("/api/v1/users/me", headers=key_token)).status_code == 200
    for method, path, body in (
        ("POST", KEYS, {"name": "escalate", "scopes": ["admin"]}),
        ("GET", KEYS, None),
        ("DELETE", f"{KEYS}/{created['id']}", None),
        (
            "PATCH",
            "/api/v1/users/me",
            {"password": "new password 123456", "current_password": account.password},
        ),
        ("DELETE", "/api/v1/users/me", None),
        ("POST", "/api/v1/auth/logout-all", None),
        ("GET", "/api/v1/users", None),  # the user is an admin, the key has no admin scope
    ):
        response = await identity.request(method, path, json=body, headers=key_token)
        assert response.status_code == 403, (method, path, response.text)
    assert len((await identity.get(KEYS, headers=account.headers)).json()["items"]) == 1


async def test_a_user_holds_at_most_50_live_keys(identity, make_account):
    """Revoked and expired keys do not count; the 51st live key is a 409."""
    account = await make_account()
    keys = [await create_key(identity, account, name=f"k{i}") for i in range(50)]
    refused = await identity.post(KEYS, json={"name": "one-too-many"}, headers=account.headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/too-many-api-keys")
    assert refused.json()["limit"] == 50
    assert (
        await identity.delete(f"{KEYS}/{keys[0]['id']}", headers=account.headers)
    ).status_code == 204
    await create_key(identity, account, name="in-the-revoked-ones-place")
    async with identity.app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == uuid.UUID(keys[1]["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    await create_key(identity, account, name="in-the-expired-ones-place")
    again = await identity.post(KEYS, json={"name": "still-too-many"}, headers=account.headers)
    assert again.status_code == 409
    # Another user has their own allowance.
    other = await make_account()
    await create_key(identity, other)

"""Profile, password change, and admin-only administration."""

from __future__ import annotations

import uuid

ME = "/api/v1/users/me"
NEW_PASSWORD = "a much better passphrase 42"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_get_and_rename_me_emits_user_updated(identity, make_account, outbox_events):
    account = await make_account(name="Old Name")
    me = await identity.get(ME, headers=account.headers)
    assert me.json()["name"] == "Old Name"
    renamed = await identity.patch(ME, json={"name": "New Name"}, headers=account.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "New Name"
    events = await outbox_events("identity.user.updated", account.id)
    assert events[-1]["data"]["name"] == "New Name"


async def test_password_change_needs_current_password_and_ends_other_sessions(
    identity, make_account, login
):
    account = await make_account()
    other = await login(account.email)
    wrong = await identity.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": "wrong password!"},
        headers=account.headers,
    )
    assert wrong.status_code == 401
    changed = await identity.patch(
        ME,
        json={"password": NEW_PASSWORD, "current_password": account.password},
        headers=account.headers,
    )
    assert changed.status_code == 200
    assert (await identity.get(ME, headers=account.headers)).status_code == 200  # this session
    assert (await identity.get(ME, headers=bearer(other["access_token"]))).status_code == 401
    old_login = await identity.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert old_login.status_code == 401
    await login(account.email, NEW_PASSWORD)


async def test_unknown_fields_are_rejected(identity, make_account):
    account = await make_account()
    response = await identity.patch(ME, json={"roles": ["admin"]}, headers=account.headers)
    assert response.status_code == 422


async def test_admin_routes_refuse_plain_users(identity, make_account):
    user = await make_account()
    victim = await make_account()
    for method, path, body in (
        ("GET", "/api/v1/users", None),
        ("PATCH", f"/api/v1/users/{victim.id}", {"role": "admin"}),
        ("POST", f"/api/v1/users/{victim.id}/deactivate", None),
        ("GET", f"/api/v1/users/{victim.id}/erasure", None),
    ):
        response = await identity.request(method, path, json=body, headers=user.headers)
        assert response.status_code == 403, (method, path)
        assert response.json()["type"].endswith("/forbidden")


async def test_admin_lists_filters_and_sorts_users(identity, make_account):
    admin = await make_account(admin=True)
    tag = uuid.uuid4().hex[:8]
    emails = []
    for i in range(3):
        email = f"{tag}-{i}@example.com"
        emails.append(email)
        await identity.post(
            "/api/v1/auth/register",
            json={"email": email, "password": "correct horse battery staple", "name": f"U{i}"},
        )
    page = await identity.get(
        "/api/v1/users",
        params={"email": tag, "sort": "email", "limit": 2},
        headers=admin.headers,
    )
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 3
    assert [u["email"] for u in body["items"]] == emails[:2]
    second = await identity.get(
        "/api/v1/users",
        params={"email": tag, "sort": "email", "limit": 2, "offset": 2},
        headers=admin.headers,
    )
    assert [u["email"] for u in second.json()["items"]] == emails[2:]
    admins = await identity.get(
        "/api/v1/users", params={"role": "admin", "email": admin.email}, headers=admin.headers
    )
    assert [u["email"] for u in admins.json()["items"]] == [admin.email]
    bad_sort = await identity.get(
        "/api/v1/users", params={"sort": "password"}, headers=admin.headers
    )
    assert bad_sort.status_code == 422


async def test_admin_promotes_and_deactivates(identity, make_account, outbox_events):
    admin = await make_account(admin=True)
    user = await make_account()
    promoted = await identity.patch(
        f"/api/v1/users/{user.id}", json={"role": "admin"}, headers=admin.headers
    )
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"

    deactivated = await identity.post(f"/api/v1/users/{user.id}/deactivate", headers=admin.headers)
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    events = await outbox_events("identity.user.deactivated", user.id)
    assert events and events[0]["data"]["user_id"] == user.id
    login = await identity.post(
        "/api/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    assert login.status_code == 403
    assert login.json()["type"].endswith("/account-deactivated")
    refresh = await identity.post(
        "/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    assert refresh.status_code == 401
    assert (await identity.get(ME, headers=user.headers)).status_code == 401
    missing = await identity.post(f"/api/v1/users/{uuid.uuid4()}/deactivate", headers=admin.headers)
    assert missing.status_code == 404


async def test_bootstrap_admin_from_settings_is_created_once(identity_settings):
    from pydantic import SecretStr

    from agentmesh.identity.app import create_app
    from agentmesh.shared.testing.fixtures import app_client

    email = f"boot-{uuid.uuid4().hex[:8]}@example.com"
    settings = identity_settings.model_copy(
        update={"bootstrap_admin_email": email, "bootstrap_admin_password": SecretStr(NEW_PASSWORD)}
    )
    for _ in range(2):  # a restart must not fail or duplicate the admin
        async with app_client(create_app(settings)) as client:
            tokens = await client.post(
                "/api/v1/auth/login", json={"email": email, "password": NEW_PASSWORD}
            )
            assert tokens.status_code == 200
            listing = await client.get(
                "/api/v1/users",
                params={"email": email},
                headers=bearer(tokens.json()["access_token"]),
            )
            assert listing.status_code == 200
            assert [u["role"] for u in listing.json()["items"]] == ["admin"]

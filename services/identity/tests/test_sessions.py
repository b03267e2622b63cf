"""Refresh rotation, reuse detection (also under a race), logout and logout-all."""

from __future__ import annotations

import asyncio

REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/users/me"
SESSIONS = "/api/v1/auth/sessions"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_refresh_rotates_the_pair(identity, make_account):
    account = await make_account()
    response = await identity.post(REFRESH, json={"refresh_token": account.refresh_token})
    assert response.status_code == 200
    pair = response.json()
    assert pair["refresh_token"] != account.refresh_token
    assert (await identity.get(ME, headers=bearer(pair["access_token"]))).status_code == 200
    again = await identity.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 200


async def test_reusing_a_rotated_token_revokes_the_whole_family(identity, make_account):
    account = await make_account()
    first = (await identity.post(REFRESH, json={"refresh_token": account.refresh_token})).json()
    second = (await identity.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()

    reuse = await identity.post(REFRESH, json={"refresh_token": account.refresh_token})
    assert reuse.status_code == 401
    assert reuse.json()["type"].endswith("/invalid-refresh-token")
    # Every token descended from that login is dead now.
    latest = await identity.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert latest.status_code == 401
    assert (await identity.get(ME, headers=bearer(second["access_token"]))).status_code == 401


async def test_two_concurrent_refreshes_one_wins_and_the_loser_is_reuse(identity, make_account):
    account = await make_account()
    results = await asyncio.gather(
        identity.post(REFRESH, json={"refresh_token": account.refresh_token}),
        identity.post(REFRESH, json={"refresh_token": account.refresh_token}),
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 401]
    winner = next(r for r in results if r.status_code == 200).json()
    # The loser was treated as reuse, so the winner's family is revoked too.
    after = await identity.post(REFRESH, json={"refresh_token": winner["refresh_token"]})
    assert after.status_code == 401


async def test_unknown_refresh_token_is_401(identity):
    response = await identity.post(REFRESH, json={"refresh_token": "not-a-real-token"})
    assert response.status_code == 401


async def test_logout_ends_only_the_current_session(identity, make_account, login):
    account = await make_account()
    other = await login(account.email)
    response = await identity.post("/api/v1/auth/logout", headers=account.headers)
    assert response.status_code == 204
    assert (await identity.get(ME, headers=account.headers)).status_code == 401
    dead = await identity.post(REFRESH, json={"refresh_token": account.refresh_token})
    assert dead.status_code == 401
    assert (await identity.get(ME, headers=bearer(other["access_token"]))).status_code == 200


async def test_a_verified_token_is_refused_once_its_session_ends(identity, make_account):
    """Tokens are verified once and remembered until they expire; logging out still
    refuses the remembered token, on the read path and on the routes that write."""
    account = await make_account()
    for _ in range(2):  # the second use is answered from the verified-token cache
        assert (await identity.get(ME, headers=account.headers)).status_code == 200
    assert (await identity.get(SESSIONS, headers=account.headers)).status_code == 200
    response = await identity.post("/api/v1/auth/logout", headers=account.headers)
    assert response.status_code == 204
    for path in (ME, SESSIONS):
        refused = await identity.get(path, headers=account.headers)
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["detail"] == "session ended"


async def test_a_verified_token_is_refused_once_its_user_is_deactivated(identity, make_account):
    admin = await make_account(admin=True)
    user = await make_account()
    assert (await identity.get(ME, headers=user.headers)).status_code == 200
    assert (await identity.get(SESSIONS, headers=user.headers)).status_code == 200
    deactivated = await identity.post(f"/api/v1/users/{user.id}/deactivate", headers=admin.headers)
    assert deactivated.status_code == 200
    for path in (ME, SESSIONS):
        refused = await identity.get(path, headers=user.headers)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "account is not active"


async def test_logout_all_ends_every_session(identity, make_account, login):
    account = await make_account()
    other = await login(account.email)
    response = await identity.post("/api/v1/auth/logout-all", headers=account.headers)
    assert response.status_code == 204
    for tokens in (
        {"access_token": account.access_token, "refresh_token": account.refresh_token},
        other,
    ):
        assert (await identity.get(ME, headers=bearer(tokens["access_token"]))).status_code == 401
        refreshed = await identity.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 401


async def test_missing_and_forged_tokens_are_401(identity, make_account):
    assert (await identity.get(ME)).status_code == 401
    account = await make_account()
    header, payload, signature = account.access_token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert (await identity.get(ME, headers=bearer(forged))).status_code == 401
    response = await identity.get(ME, headers=bearer("garbage"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"

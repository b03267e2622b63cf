"""Sessions a user can see and end, and emails that match whatever their case."""

from __future__ import annotations

import uuid

SESSIONS = "/api/v1/auth/sessions"
PASSWORD = "correct horse battery staple"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_sessions_list_how_and_from_where_each_signed_in(identity, make_account, login):
    account = await make_account()
    other = await identity.post(
        "/api/v1/auth/login",
        json={"email": account.email, "password": PASSWORD},
        headers={"User-Agent": "Firefox/140 test"},
    )
    assert other.status_code == 200
    response = await identity.get(SESSIONS, headers=account.headers)
    assert response.status_code == 200, response.text
    sessions = response.json()
    assert len(sessions) == 2
    newest, first = sessions
    assert newest["user_agent"] == "Firefox/140 test" and newest["current"] is False
    assert first["current"] is True
    assert {s["method"] for s in sessions} == {"password"}
    assert all(s["ip"] and s["created_at"] and s["last_used_at"] for s in sessions)


async def test_refresh_moves_last_used_at(identity, make_account):
    account = await make_account()
    before = (await identity.get(SESSIONS, headers=account.headers)).json()[0]
    pair = (
        await identity.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    ).json()
    after = (await identity.get(SESSIONS, headers=bearer(pair["access_token"]))).json()[0]
    assert after["id"] == before["id"] and after["last_used_at"] > before["last_used_at"]


async def test_ending_a_session_revokes_it_and_only_it(identity, make_account, login):
    account = await make_account()
    other = await login(account.email)
    sessions = (await identity.get(SESSIONS, headers=account.headers)).json()
    target = next(s for s in sessions if not s["current"])
    response = await identity.delete(f"{SESSIONS}/{target['id']}", headers=account.headers)
    assert response.status_code == 204
    assert (await identity.get(SESSIONS, headers=bearer(other["access_token"]))).status_code == 401
    refreshed = await identity.post(
        "/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert refreshed.status_code == 401
    left = (await identity.get(SESSIONS, headers=account.headers)).json()
    assert [s["id"] for s in left] == [s["id"] for s in sessions if s["current"]]
    again = await identity.delete(f"{SESSIONS}/{target['id']}", headers=account.headers)
    assert again.status_code == 404
    assert again.json()["type"].endswith("/session-not-found")


async def test_another_users_session_is_404(identity, make_account):
    mine, theirs = await make_account(), await make_account()
    their_id = (await identity.get(SESSIONS, headers=theirs.headers)).json()[0]["id"]
    response = await identity.delete(f"{SESSIONS}/{their_id}", headers=mine.headers)
    assert response.status_code == 404
    assert (await identity.get(SESSIONS, headers=theirs.headers)).status_code == 200


async def test_an_oidc_session_names_its_provider(browser, oidc_provider):
    subject = f"sub-{uuid.uuid4().hex[:12]}"
    await oidc_provider.set_user(
        subject, email=f"s-{uuid.uuid4().hex[:8]}@example.com", email_verified=True
    )
    pair = (await browser.sign_in(subject)).json()
    sessions = (await browser.client.get(SESSIONS, headers=bearer(pair["access_token"]))).json()
    assert [(s["method"], s["current"]) for s in sessions] == [("oidc:corp", True)]


async def test_emails_differing_in_case_are_one_account(identity):
    local = f"Ada-{uuid.uuid4().hex[:8]}"
    first = {"email": f"{local}@Example.com", "password": PASSWORD, "name": "Ada"}
    created = await identity.post("/api/v1/auth/register", json=first)
    assert created.status_code == 201
    assert created.json()["email"] == f"{local}@example.com"  # the local part as given
    second = first | {"email": f"{local.lower()}@example.COM"}
    taken = await identity.post("/api/v1/auth/register", json=second)
    assert taken.status_code == 409
    assert taken.json()["type"].endswith("/email-taken")
    for spelling in (f"{local.upper()}@EXAMPLE.COM", f"{local.lower()}@example.com"):
        login = await identity.post(
            "/api/v1/auth/login", json={"email": spelling, "password": PASSWORD}
        )
        assert login.status_code == 200, spelling


async def test_failed_logins_count_against_the_account_whatever_the_case(identity, make_account):
    account = await make_account()
    spellings = [account.email.upper(), account.email, account.email.title()]
    for attempt in range(5):
        wrong = {"email": spellings[attempt % 3], "password": "wrong password 12345"}
        assert (await identity.post("/api/v1/auth/login", json=wrong)).status_code == 401
    right = {"email": account.email.upper(), "password": PASSWORD}
    assert (await identity.post("/api/v1/auth/login", json=right)).status_code == 429


async def test_an_invitation_reaches_the_account_whatever_the_case(identity, make_account):
    owner, invitee = await make_account(), await make_account()
    workspace = await identity.post(
        "/api/v1/workspaces", json={"name": "Case"}, headers=owner.headers
    )
    invited = await identity.post(
        f"/api/v1/workspaces/{workspace.json()['id']}/invitations",
        json={"email": invitee.email.upper(), "role": "member"},
        headers=owner.headers,
    )
    assert invited.status_code == 201, invited.text
    mine = (await identity.get("/api/v1/invitations", headers=invitee.headers)).json()
    assert [i["id"] for i in mine] == [invited.json()["id"]]
    accepted = await identity.post(
        "/api/v1/invitations/accept",
        json={"token": invited.json()["token"]},
        headers=invitee.headers,
    )
    assert accepted.status_code == 200, accepted.text


async def test_erasure_removes_failed_logins_of_a_mixed_case_email(identity, login):
    from sqlalchemy import func, select

    from agentmesh.identity.auth.models import LoginFailure

    address = f"Mixed-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": address, "password": PASSWORD, "name": "Mixed"}
    assert (await identity.post("/api/v1/auth/register", json=body)).status_code == 201
    wrong = {"email": address.upper(), "password": "not the password 123"}
    assert (await identity.post("/api/v1/auth/login", json=wrong)).status_code == 401
    pair = await login(address)
    # The failure is gone with a successful login; fail again, then erase.
    assert (await identity.post("/api/v1/auth/login", json=wrong)).status_code == 401

    async def left() -> int:
        async with identity.app.state.sessionmaker() as session:
            count = select(func.count()).select_from(LoginFailure)
            return await session.scalar(count.where(LoginFailure.email == address.lower()))

    assert await left() == 1
    erased = await identity.delete("/api/v1/users/me", headers=bearer(pair["access_token"]))
    assert erased.status_code == 202
    assert await left() == 0

"""Registration, login, throttling and enumeration resistance, through HTTP."""

from __future__ import annotations

import uuid

PASSWORD = "correct horse battery staple"
REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"


def problem_type(response) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()["type"].rsplit("/", 1)[-1]


async def test_register_normalizes_email_and_emits_event(identity, outbox_events):
    local = f"Ada.{uuid.uuid4().hex[:8]}"
    response = await identity.post(
        REGISTER, json={"email": f"  {local}@EXAMPLE.Com ", "password": PASSWORD, "name": "Ada"}
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["email"] == f"{local}@example.com"
    assert user["role"] == "user" and user["active"] is True
    assert "password" not in response.text.lower()

    events = await outbox_events("identity.user.registered", user["id"])
    assert len(events) == 1
    assert events[0]["data"] == {
        "user_id": user["id"],
        "email": user["email"],
        "name": "Ada",
        "roles": ["user"],
    }
    assert events[0]["source"] == "identity" and events[0]["version"] == 1


async def test_duplicate_email_is_409_even_with_other_case_in_domain(identity):
    email = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    first = await identity.post(REGISTER, json={"email": email, "password": PASSWORD, "name": "A"})
    assert first.status_code == 201
    again = await identity.post(
        REGISTER,
        json={
            "email": email.replace("example.com", "EXAMPLE.COM"),
            "password": PASSWORD,
            "name": "B",
        },
    )
    assert again.status_code == 409
    assert problem_type(again) == "email-taken"


async def test_password_policy(identity):
    def body(password, email=None):
        return {
            "email": email or f"p-{uuid.uuid4().hex[:8]}@example.com",
            "password": password,
            "name": "P",
        }

    too_short = await identity.post(REGISTER, json=body("short-pass1"))
    assert too_short.status_code == 422 and problem_type(too_short) == "validation-error"
    too_long = await identity.post(REGISTER, json=body("x" * 257))
    assert too_long.status_code == 422
    common = await identity.post(REGISTER, json=body("q1w2e3r4t5y6"))
    assert common.status_code == 422 and problem_type(common) == "weak-password"
    email = f"self-{uuid.uuid4().hex[:8]}@example.com"
    as_email = await identity.post(REGISTER, json=body(email, email=email))
    assert as_email.status_code == 422 and problem_type(as_email) == "weak-password"
    bad_email = await identity.post(REGISTER, json=body(PASSWORD, email="not-an-email"))
    assert bad_email.status_code == 422


async def test_login_returns_a_token_pair(identity, make_account):
    account = await make_account()
    response = await identity.post(LOGIN, json={"email": account.email, "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"] and body["access_token"].count(".") == 2
    assert response.headers["cache-control"] == "no-store"


async def test_oauth2_password_form_works(identity, make_account):
    account = await make_account()
    response = await identity.post(
        "/api/v1/auth/token", data={"username": account.email, "password": PASSWORD}
    )
    assert response.status_code == 200
    me = await identity.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert me.json()["email"] == account.email


async def test_wrong_password_and_unknown_email_look_the_same(identity, make_account):
    account = await make_account()
    passwords = identity.app.state.auth.passwords
    calls = []
    original = passwords.hasher

    class CountingHasher:
        def __getattr__(self, name):
            return getattr(original, name)

        def verify(self, hash_, password):
            calls.append(hash_)
            return original.verify(hash_, password)

    passwords.hasher = CountingHasher()
    try:
        wrong = await identity.post(LOGIN, json={"email": account.email, "password": "x" * 14})
        unknown = await identity.post(
            LOGIN, json={"email": f"ghost-{uuid.uuid4().hex}@example.com", "password": "x" * 14}
        )
    finally:
        passwords.hasher = original
    assert wrong.status_code == unknown.status_code == 401
    strip = lambda r: {k: v for k, v in r.json().items() if k != "request_id"}  # noqa: E731
    assert strip(wrong) == strip(unknown)
    # Both paths did exactly one Argon2 verification: the same work, so the same time.
    assert len(calls) == 2 and all(h.startswith("$argon2id$") for h in calls)


async def test_account_throttle_after_five_failures(identity, make_account):
    account = await make_account()
    for _ in range(5):
        r = await identity.post(LOGIN, json={"email": account.email, "password": "wrong" * 3})
        assert r.status_code == 401
    blocked = await identity.post(LOGIN, json={"email": account.email, "password": PASSWORD})
    assert blocked.status_code == 429
    assert problem_type(blocked) == "too-many-login-attempts"
    assert 1 <= int(blocked.headers["retry-after"]) <= 900


async def test_ip_throttle_after_twenty_failures(identity, make_account):
    account = await make_account()
    for i in range(20):
        r = await identity.post(
            LOGIN,
            json={
                "email": f"nobody-{i}-{uuid.uuid4().hex[:6]}@example.com",
                "password": "wrong" * 3,
            },
        )
        assert r.status_code == 401
    # The right password of a real account, but from an IP that guessed too much.
    blocked = await identity.post(LOGIN, json={"email": account.email, "password": PASSWORD})
    assert blocked.status_code == 429
    assert "retry-after" in blocked.headers


async def test_argon2id_parameters_follow_owasp(identity, make_account):
    account = await make_account()
    from sqlalchemy import select

    from agentmesh.identity.users.models import User

    async with identity.app.state.sessionmaker() as session:
        stored = await session.scalar(select(User.password_hash).where(User.email == account.email))
    # OWASP password storage cheat sheet: Argon2id, m=19 MiB, t=2, p=1.
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_nul_characters_are_422_not_500(identity, make_account):
    email = f"nul-{uuid.uuid4().hex[:8]}@example.com"
    name = await identity.post(
        REGISTER, json={"email": email, "password": PASSWORD, "name": "a\u0000b"}
    )
    assert name.status_code == 422 and problem_type(name) == "invalid-data"
    login = await identity.post(LOGIN, json={"email": "a\u0000@example.com", "password": PASSWORD})
    assert login.status_code in (401, 422)
    account = await make_account()
    key = await identity.post("/api/v1/api-keys", json={"name": "k\u0000"}, headers=account.headers)
    assert key.status_code == 422


async def test_ipv6_login_failures_count_per_64(identity, make_account):
    """Twenty failures from twenty addresses of one /64 block the whole /64."""
    import httpx

    account = await make_account()

    def client(ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=identity.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    for i in range(1, 21):
        async with client(f"2001:db8:42:42::{i:x}") as guesser:
            wrong = {
                "email": f"nobody-{i}-{uuid.uuid4().hex[:6]}@example.com",
                "password": "wrong" * 3,
            }
            assert (await guesser.post(LOGIN, json=wrong)).status_code == 401
    right = {"email": account.email, "password": PASSWORD}
    async with client("2001:db8:42:42:ffff::1") as same_64:
        blocked = await same_64.post(LOGIN, json=right)
    assert blocked.status_code == 429
    assert problem_type(blocked) == "too-many-login-attempts"
    async with client("2001:db8:42:43::1") as next_64:
        assert (await next_64.post(LOGIN, json=right)).status_code == 200

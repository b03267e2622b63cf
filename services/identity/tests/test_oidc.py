"""OpenID Connect sign-in against a real provider (oidc-provider-mock) over HTTP: the
flow, return_to with a login code, and every way a callback is refused."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

ME = "/api/v1/users/me"


def sub() -> str:
    return f"sub-{uuid.uuid4().hex[:12]}"


def email() -> str:
    return f"oidc-{uuid.uuid4().hex[:10]}@example.com"


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = query(url) | changes
    return urlunsplit(parts._replace(query=urlencode(params)))


async def test_providers_are_listed_for_a_login_page(oidc_identity):
    response = await oidc_identity.get("/api/v1/auth/oidc/providers")
    assert response.status_code == 200
    names = {p["name"]: p["display_name"] for p in response.json()}
    assert names["corp"] == "Corp SSO" and names["acme"] == "acme"


async def test_authorize_redirects_with_pkce_state_nonce_and_a_bound_cookie(browser, oidc_provider):
    response = await browser.authorize("corp")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(oidc_provider.url + "/oauth2/authorize?")
    params = query(location)
    assert params["client_id"] == "corp-client"
    assert params["response_type"] == "code"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["state"] and params["nonce"] and params["state"] != params["nonce"]
    assert params["redirect_uri"] == "http://testserver/api/v1/auth/oidc/corp/callback"
    assert set(params["scope"].split()) == {"openid", "email", "profile"}
    cookie = response.headers["set-cookie"]
    assert "agentmesh_oidc=" in cookie and "HttpOnly" in cookie
    assert "Path=/api/v1/auth/oidc/" in cookie and "SameSite=lax" in cookie
    # The state travels to the provider, never the cookie's secret binding.
    assert params["state"] not in cookie


async def test_the_callback_url_follows_the_forwarded_host(oidc_identity):
    response = await oidc_identity.get(
        "/api/v1/auth/oidc/corp/authorize",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "mesh.example.org"},
    )
    assert response.status_code == 302
    redirect_uri = query(response.headers["location"])["redirect_uri"]
    assert redirect_uri == "https://mesh.example.org/api/v1/auth/oidc/corp/callback"
    assert "Secure" in response.headers["set-cookie"]


async def test_full_flow_creates_the_user_and_answers_a_token_pair(browser, oidc_provider):
    subject, address = sub(), email()
    await oidc_provider.set_user(subject, email=address, email_verified=True, name="Grace H")
    response = await browser.sign_in(subject)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    pair = response.json()
    assert pair["token_type"] == "bearer" and pair["refresh_token"]
    me = await browser.client.get(ME, headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.status_code == 200
    body = me.json()
    assert body["email"] == address and body["name"] == "Grace H"
    assert body["has_password"] is False
    assert [(i["provider"], i["email"]) for i in body["identities"]] == [("corp", address)]
    # A later sign-in finds the same user by (provider, sub), whatever the email says now.
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    again = await browser.sign_in(subject)
    assert again.status_code == 200, again.text
    again_headers = {"Authorization": f"Bearer {again.json()['access_token']}"}
    me2 = await browser.client.get(ME, headers=again_headers)
    assert me2.json()["id"] == body["id"]
    # No password was set: password login is not a way in.
    login = await browser.client.post(
        "/api/v1/auth/login", json={"email": address, "password": "anything at all 123"}
    )
    assert login.status_code == 401


async def test_return_to_gets_a_one_time_login_code_swapped_for_tokens(
    browser, oidc_provider, oidc_return_url
):
    subject = sub()
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    response = await browser.sign_in(subject, return_to=oidc_return_url)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(oidc_return_url + "?")
    params = query(location)
    assert set(params) == {"login_code"}  # tokens never travel in the URL
    swap = await browser.client.post("/api/v1/auth/oidc/token", json=params)
    assert swap.status_code == 200, swap.text
    headers = {"Authorization": f"Bearer {swap.json()['access_token']}"}
    assert (await browser.client.get(ME, headers=headers)).status_code == 200
    again = await browser.client.post("/api/v1/auth/oidc/token", json=params)
    assert again.status_code == 400
    assert again.json()["type"].endswith("/invalid-login-code")
    unknown = await browser.client.post("/api/v1/auth/oidc/token", json={"login_code": "nope"})
    assert unknown.json()["type"].endswith("/invalid-login-code")


async def test_return_to_must_be_configured(browser):
    response = await browser.authorize("corp", return_to="https://evil.example/steal")
    assert response.status_code == 400
    assert response.json()["type"].endswith("/return-url-not-allowed")


async def test_unknown_provider_is_404(browser):
    response = await browser.authorize("nope")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/oidc-provider-not-found")


async def test_a_replayed_callback_is_refused(browser, oidc_provider):
    subject = sub()
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    callback = await browser.to_callback(subject)
    assert (await browser.client.get(callback)).status_code == 200
    replay = await browser.client.get(callback)
    assert replay.status_code == 400
    assert replay.json()["type"].endswith("/oidc-code-replayed")


async def test_a_code_brought_back_in_another_flow_is_refused(browser, oidc_provider):
    """The same authorization code under a fresh state (and its cookie): used once."""
    subject = sub()
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    first = await browser.to_callback(subject)
    assert (await browser.client.get(first)).status_code == 200
    second = await browser.to_callback(subject)
    forged = with_query(second, code=query(first)["code"])
    response = await browser.client.get(forged)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/oidc-code-replayed")


async def test_a_tampered_state_is_refused(browser, oidc_provider):
    subject = sub()
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    callback = await browser.to_callback(subject)
    tampered = with_query(callback, state=query(callback)["state"][:-2] + "xx")
    response = await browser.client.get(tampered)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/invalid-oidc-state")
    assert "Traceback" not in response.text


async def test_a_callback_without_this_browsers_cookie_is_refused(browser, oidc_provider):
    subject = sub()
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    callback = await browser.to_callback(subject)
    browser.client.cookies.clear()
    response = await browser.client.get(callback)
    assert response.status_code == 400
    assert response.json()["type"].endswith("/invalid-oidc-state")
    # A forged cookie is no better.
    browser.client.cookies.set(
        "agentmesh_oidc", "eyJhbGciOiJIUzI1NiJ9.e30.x", path="/api/v1/auth/oidc/"
    )
    forged = await browser.client.get(callback)
    assert forged.json()["type"].endswith("/invalid-oidc-state")


async def test_an_id_token_signed_by_another_key_is_refused(browser, oidc_provider):
    subject = sub()
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    response = await browser.sign_in(subject, name="evil")
    assert response.status_code == 401, response.text
    assert response.json()["type"].endswith("/invalid-id-token")
    assert "signature" in response.json()["detail"]


@pytest.mark.parametrize("name", ["hs256", "unsigned"])
async def test_an_id_token_with_an_algorithm_discovery_does_not_list_is_refused(
    browser, oidc_provider, name
):
    subject = sub()
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    response = await browser.sign_in(subject, name=name)
    assert response.status_code == 401, response.text
    assert response.json()["type"].endswith("/invalid-id-token")
    assert "algorithm" in response.json()["detail"]


async def test_a_provider_error_is_a_problem(browser):
    started = await browser.authorize("corp")
    state = query(started.headers["location"])["state"]
    response = await browser.client.get(
        "/api/v1/auth/oidc/corp/callback", params={"error": "access_denied", "state": state}
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("/oidc-provider-error")
    assert "access_denied" in response.json()["detail"]


async def test_a_code_the_provider_does_not_know_is_refused(browser):
    started = await browser.authorize("corp")
    state = query(started.headers["location"])["state"]
    response = await browser.client.get(
        "/api/v1/auth/oidc/corp/callback", params={"code": "made-up", "state": state}
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("/oidc-code-rejected")


async def test_a_provider_outside_the_allowed_hosts_is_never_called(oidc_settings):
    """The guarded client refuses loopback unless AGENTMESH_ALLOWED_PRIVATE_HOSTS says so."""
    from agentmesh.identity.app import create_app
    from agentmesh.shared.testing.fixtures import app_client

    app = create_app(oidc_settings.model_copy(update={"allowed_private_hosts": ()}))
    async with app_client(app) as client:
        response = await client.get("/api/v1/auth/oidc/corp/authorize")
    assert response.status_code == 502
    assert response.json()["type"].endswith("/oidc-provider-unavailable")
    assert "not allowed" in response.json()["detail"]


async def test_a_flow_started_on_one_replica_completes_on_another(
    oidc_settings, oidc_provider, oidc_return_url
):
    """State, code use and login codes live in Postgres: replica B finishes what A began,
    and a replay on A after B is still refused."""
    from agentmesh.identity.app import create_app
    from agentmesh.shared.testing.fixtures import app_client

    subject = sub()
    await oidc_provider.set_user(subject, email=email(), email_verified=True)
    async with (
        app_client(create_app(oidc_settings)) as first,
        app_client(create_app(oidc_settings)) as second,
    ):
        started = await first.get(
            "/api/v1/auth/oidc/corp/authorize", params={"return_to": oidc_return_url}
        )
        callback = await oidc_provider.sign_in(started.headers["location"], subject)
        second.cookies.update(first.cookies)
        done = await second.get(callback)
        assert done.status_code == 302, done.text
        login_code = query(done.headers["location"])["login_code"]
        replay = await first.get(callback)
        assert replay.json()["type"].endswith("/oidc-code-replayed")
        swap = await first.post("/api/v1/auth/oidc/token", json={"login_code": login_code})
        assert swap.status_code == 200, swap.text
        reuse = await second.post("/api/v1/auth/oidc/token", json={"login_code": login_code})
        assert reuse.json()["type"].endswith("/invalid-login-code")

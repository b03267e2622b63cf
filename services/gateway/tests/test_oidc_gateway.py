"""OpenID Connect sign-in through the gateway: the public /auth/oidc paths reach identity
without a token, the callback URL is the gateway's, and a session ended by its user is
refused by the gateway (the deny list), like a deactivated user."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI

from agentmesh.gateway.app import create_app as create_gateway
from agentmesh.gateway.routing import resolve
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.oidc.config import OidcProviders
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.backbone import wait_until
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    serve_app,
)
from agentmesh.shared.testing.oidc_provider import mock_provider

RETURN_URL = "https://app.example.com/signed-in"


def chat_standin() -> FastAPI:
    app = FastAPI()

    @app.get("/health/ready")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.get("/api/v1/conversations/echo")
    async def echo() -> dict:
        return {"ok": True}

    return app


@pytest.fixture
async def gateway(common_settings):
    """The gateway in front of identity (with a real OIDC provider) and a chat stand-in."""
    async with AsyncExitStack() as stack:
        provider = await stack.enter_async_context(mock_provider())
        identity_app = create_identity(
            IdentitySettings(
                common=common_settings,
                key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                internal_token=TEST_INTERNAL_TOKEN,
                oidc_providers=OidcProviders.model_validate(
                    {
                        "corp": {
                            "issuer": provider.url,
                            "client_id": "gw-client",
                            "client_secret": "s3cret",
                            "display_name": "Corp",
                        }
                    }
                ),
                oidc_return_urls=[RETURN_URL],
                allowed_private_hosts=(provider.url.removeprefix("http://"),),
            )
        )
        identity_url = await stack.enter_async_context(serve_app(identity_app))
        chat_url = await stack.enter_async_context(serve_app(chat_standin()))
        settings = GatewaySettings(
            common=common_settings,
            identity_url=identity_url,
            agents_url=f"http://127.0.0.1:{free_port()}",
            chat_url=chat_url,
            internal_token=TEST_INTERNAL_TOKEN,
        )
        client = await stack.enter_async_context(app_client(create_gateway(settings)))
        client.provider = provider
        yield client


def test_the_oidc_paths_are_public_and_nothing_else_of_them():
    for method, path in (
        ("GET", "/api/v1/auth/oidc/providers"),
        ("GET", "/api/v1/auth/oidc/corp/authorize"),
        ("GET", "/api/v1/auth/oidc/corp/callback"),
        ("POST", "/api/v1/auth/oidc/token"),
    ):
        route = resolve(method, path)
        assert route is not None and route.upstream == "identity" and route.public, path
    for method, path in (
        ("POST", "/api/v1/auth/oidc/corp/callback"),
        ("GET", "/api/v1/auth/oidc/corp/x/callback"),
        ("GET", "/api/v1/auth/sessions"),
        ("DELETE", "/api/v1/auth/sessions/abc"),
    ):
        route = resolve(method, path)
        assert route is not None and not route.public, path


async def test_sign_in_through_the_gateway_then_end_the_session(gateway):
    provider = gateway.provider
    subject = f"sub-{uuid.uuid4().hex[:10]}"
    await provider.set_user(
        subject, email=f"gw-{uuid.uuid4().hex[:8]}@example.com", email_verified=True
    )
    listed = await gateway.get("/api/v1/auth/oidc/providers")
    assert listed.json() == [{"name": "corp", "display_name": "Corp"}]

    started = await gateway.get(
        "/api/v1/auth/oidc/corp/authorize", params={"return_to": RETURN_URL}
    )
    assert started.status_code == 302, started.text
    params = parse_qs(urlsplit(started.headers["location"]).query)
    # The callback is the gateway's public URL, not identity's own address.
    assert params["redirect_uri"] == ["http://testserver/api/v1/auth/oidc/corp/callback"]
    callback = await provider.sign_in(started.headers["location"], subject)
    assert callback.startswith("http://testserver/api/v1/auth/oidc/corp/callback?")

    back = await gateway.get(callback)  # the browser, carrying the state cookie
    assert back.status_code == 302, back.text
    location = back.headers["location"]
    assert location.startswith(RETURN_URL + "?login_code=")
    login_code = parse_qs(urlsplit(location).query)["login_code"][0]
    pair = await gateway.post("/api/v1/auth/oidc/token", json={"login_code": login_code})
    assert pair.status_code == 200, pair.text
    headers = {"Authorization": f"Bearer {pair.json()['access_token']}"}
    assert (await gateway.get("/api/v1/conversations/echo", headers=headers)).status_code == 200

    # A second session, from which the user ends the first.
    again = await gateway.get("/api/v1/auth/oidc/corp/authorize")
    second_callback = await provider.sign_in(again.headers["location"], subject)
    second = await gateway.get(second_callback)
    assert second.status_code == 200, second.text
    other = {"Authorization": f"Bearer {second.json()['access_token']}"}
    sessions = (await gateway.get("/api/v1/auth/sessions", headers=other)).json()
    assert {s["method"] for s in sessions} == {"oidc:corp"}
    first_id = next(s["id"] for s in sessions if not s["current"])
    ended = await gateway.delete(f"/api/v1/auth/sessions/{first_id}", headers=other)
    assert ended.status_code == 204

    async def refused() -> bool:
        answer = await gateway.get("/api/v1/conversations/echo", headers=headers)
        return answer.status_code == 401

    await wait_until(refused, timeout=10)
    assert (await gateway.get("/api/v1/conversations/echo", headers=other)).status_code == 200

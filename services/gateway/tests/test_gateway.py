"""The gateway end to end, with the real identity service behind it."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from agentmesh.gateway.app import create_app
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.shared.testing.backbone import wait_until
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN
from agentmesh.shared.testing.jwt_keys import SigningKey, make_claims

ME = "/api/v1/users/me"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith(f"/{slug}")
    assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_login_and_profile_through_the_gateway(platform, account):
    email, token = await account()
    login = await platform.post(
        "/api/v1/auth/login", json={"email": email, "password": "correct horse battery staple"}
    )
    assert login.headers["cache-control"] == "no-store"
    assert login.headers["x-content-type-options"] == "nosniff"
    assert login.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in login.headers  # plain HTTP
    me = await platform.get(ME, headers=bearer(token))
    assert me.status_code == 200 and me.json()["email"] == email
    jwks = await platform.get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and jwks.json()["keys"]


async def test_missing_expired_and_forged_tokens_are_401(platform, account):
    assert_problem(await platform.get(ME), 401, "unauthorized")
    _, token = await account()
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    assert_problem(await platform.get(ME, headers=bearer(forged)), 401, "unauthorized")
    stranger = SigningKey().sign(make_claims("3f0e8c8e-6d5b-4d3c-9a1b-2c3d4e5f6a7b"))
    assert_problem(await platform.get(ME, headers=bearer(stranger)), 401, "unauthorized")
    import jwt

    kid = jwt.get_unverified_header(token)["kid"]
    expired = SigningKey(kid=kid).sign(
        make_claims("3f0e8c8e-6d5b-4d3c-9a1b-2c3d4e5f6a7b", ttl=-120)
    )
    assert_problem(await platform.get(ME, headers=bearer(expired)), 401, "unauthorized")
    # Nothing unauthenticated reaches an upstream.
    assert_problem(await platform.get("/api/v1/conversations/echo"), 401, "unauthorized")


async def test_api_key_is_exchanged_once_then_cached(platform, account):
    _, token = await account()
    created = await platform.post(
        "/api/v1/api-keys", json={"name": "ci", "scopes": ["chat"]}, headers=bearer(token)
    )
    assert created.status_code == 201
    key = created.json()["key"]
    authenticator = platform.app.state.authenticator
    before = authenticator.exchanges
    first = await platform.get(ME, headers={"X-API-Key": key})
    second = await platform.get(ME, headers=bearer(key))
    assert first.status_code == second.status_code == 200
    assert authenticator.exchanges == before + 1
    echoed = (await platform.get("/api/v1/conversations/echo", headers={"X-API-Key": key})).json()
    # The upstream gets a verified access token, never the key itself.
    assert echoed["headers"]["authorization"].startswith("Bearer ey")
    assert key not in str(echoed)


async def test_revocation_evicts_the_cached_key_promptly(platform, account):
    _, token = await account()
    key = (
        await platform.post(
            "/api/v1/api-keys", json={"name": "soon-revoked"}, headers=bearer(token)
        )
    ).json()
    assert (await platform.get(ME, headers={"X-API-Key": key["key"]})).status_code == 200
    authenticator = platform.app.state.authenticator
    revoked_at = time.perf_counter()
    assert (
        await platform.delete(f"/api/v1/api-keys/{key['id']}", headers=bearer(token))
    ).status_code == 204

    async def evicted() -> bool:
        return not any(
            c.caller.api_key_id == key["prefix"].split("_")[1] for c in authenticator._keys.values()
        )

    await wait_until(evicted, timeout=10, interval=0.01)
    elapsed = time.perf_counter() - revoked_at
    print(f"revocation evicted the cached key after {elapsed * 1000:.0f} ms")
    assert_problem(
        await platform.get(ME, headers={"X-API-Key": key["key"]}), 401, "invalid-api-key"
    )


async def test_rate_limit_answers_429_with_headers(platform, account):
    _, token = await account()
    statuses = []
    for _ in range(3):
        response = await platform.post("/v1/chat/completions", json={}, headers=bearer(token))
        statuses.append(response.status_code)
    assert statuses[2] == 429
    limited = response
    # On /v1 (the OpenAI-compatible API) the gateway's own errors are in OpenAI's shape.
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["x-request-id"]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-limit"] == "2"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert int(limited.headers["ratelimit-reset"]) >= 1
    assert statuses[:2] != [429, 429]
    # Another principal has its own bucket.
    _, other = await account()
    response = await platform.post("/v1/chat/completions", json={}, headers=bearer(other))
    assert response.status_code != 429


async def test_refused_upstream_is_503_and_the_breaker_opens(platform, account):
    _, token = await account()
    for _ in range(3):
        assert_problem(
            await platform.get("/api/v1/agents", headers=bearer(token)), 503, "upstream-unavailable"
        )
    breaker = platform.app.state.proxy.breakers[("agents", "agents")]
    assert breaker.state == "open"
    fast = await platform.get("/api/v1/agents", headers=bearer(token))
    assert_problem(fast, 503, "upstream-unavailable")
    assert int(fast.headers["retry-after"]) >= 1


async def test_slow_upstream_is_504_and_big_body_is_413(platform, account):
    _, token = await account()
    assert_problem(
        await platform.get("/api/v1/conversations/slow", headers=bearer(token)),
        504,
        "upstream-timeout",
    )
    big = await platform.post(
        "/api/v1/conversations/echo",
        content=b"x" * 2048,
        headers={**bearer(token), "content-type": "text/plain"},
    )
    assert_problem(big, 413, "payload-too-large")

    async def chunks():
        for _ in range(4):
            yield b"y" * 512

    chunked = await platform.post(
        "/api/v1/conversations/echo", content=chunks(), headers=bearer(token)
    )
    assert_problem(chunked, 413, "payload-too-large")
    small = await platform.post(
        "/api/v1/conversations/echo", content=b"z" * 100, headers=bearer(token)
    )
    assert small.status_code == 200 and small.json()["size"] == 100


async def test_client_headers_cannot_assert_identity(platform, account):
    _, token = await account()
    echoed = await platform.get(
        "/api/v1/conversations/echo",
        headers={
            **bearer(token),
            "X-AgentMesh-User": "admin",
            "X-Forwarded-For": "1.2.3.4",
            "X-User-Id": "someone-else",
            "X-Request-ID": "rid-gateway-1",
        },
    )
    seen = echoed.json()["headers"]
    assert "x-agentmesh-user" not in seen and "x-user-id" not in seen
    assert seen["x-forwarded-for"] != "1.2.3.4"
    assert seen["authorization"] == f"Bearer {token}"
    assert seen["x-request-id"] == "rid-gateway-1"
    assert seen["traceparent"].startswith("00-")
    assert echoed.headers["x-request-id"] == "rid-gateway-1"


async def test_unknown_path_is_the_gateways_own_404(platform):
    for path in ("/nope", "/api/v2/agents", "/api/v1/agentsX", "/v2/models"):
        response = await platform.get(path)
        assert_problem(response, 404, "not-found")


async def test_encoded_traversal_cannot_reach_unrouted_upstream_paths(platform, account):
    _, token = await account()
    sneaky = [
        "/api/v1/users/%252e%252e/%252e%252e/%252e%252e/internal/api-keys/exchange",
        "/api/v1/runs/%2e%2e/%2e%2e/%2e%2e/v1/chat/completions",
        "/api/v1/users/..%2f..%2f..%2finternal/api-keys/exchange",
        "/api/v1/conversations/%5c..%5cecho",
    ]
    async with httpx.AsyncClient(base_url=platform.url) as client:
        for path in sneaky:
            # Sent verbatim: httpx must not normalize the path before the gateway sees it.
            request = client.build_request("POST", path, headers=bearer(token), json={})
            request.url = request.url.copy_with(raw_path=path.encode())
            response = await client.send(request)
            assert_problem(response, 404, "not-found")


async def test_streams_pass_through_unbuffered_and_disconnects_reach_upstream(platform, account):
    _, token = await account()
    standin = platform.standin
    arrivals: list[float] = []
    async with (
        httpx.AsyncClient(base_url=platform.url, timeout=10) as client,
        client.stream("GET", "/api/v1/conversations/stream", headers=bearer(token)) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_raw():
            if chunk.strip():
                arrivals.append(time.perf_counter())
            if len(arrivals) == 3:
                break
    # Each token left the gateway before the upstream produced the next one.
    assert len(arrivals) == 3
    for index in range(2):
        assert standin.sent_at[index] <= arrivals[index] < standin.sent_at[index + 1]
    # Leaving early closed the upstream stream too.
    await asyncio.wait_for(standin.disconnected.wait(), timeout=10)
    assert len(standin.sent_at) < 5


async def test_hsts_only_behind_tls_from_a_trusted_proxy(platform):
    direct = await platform.get("/health/live", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in direct.headers
    from agentmesh.shared.testing.fixtures import app_client

    async with app_client(platform.app, client_ip="10.9.9.9") as via_proxy:
        response = await via_proxy.get("/health/live", headers={"X-Forwarded-Proto": "https"})
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_cors_allows_configured_origins_only(platform):
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = await platform.options(
        "/api/v1/auth/login", headers={"Origin": "https://app.example.com", **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    refused = await platform.options(
        "/api/v1/auth/login", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in refused.headers


def test_wildcard_cors_with_credentials_is_refused(common_settings):
    with pytest.raises(ValueError, match="cannot be combined"):
        create_app(
            GatewaySettings(
                common=common_settings,
                internal_token=TEST_INTERNAL_TOKEN,
                cors_origins=["*"],
                cors_allow_credentials=True,
            )
        )


async def test_merged_openapi_has_every_service_and_one_security_scheme(platform):
    document = (await platform.get("/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/api/v1/auth/register",
        "/api/v1/users/me",
        "/api/v1/api-keys",
        "/.well-known/jwks.json",
        "/api/v1/conversations/echo",
        "/health/ready",
    ):
        assert path in paths, path
    assert "/internal/api-keys/exchange" not in paths
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKey"}
    assert paths["/api/v1/auth/login"]["post"]["security"] == []
    assert "security" not in paths["/api/v1/users/me"]["get"]
    assert document["security"]
    assert "agents" in document["info"]["description"]  # down right now, and said so
    docs = await platform.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    events = (await platform.get("/asyncapi")).json()
    assert events["asyncapi"].startswith("3.")
    addresses = {c.get("address") for c in events["channels"].values()}
    assert "identity.user.registered" in addresses


def test_group_settings_override_only_what_they_name(common_settings, monkeypatch):
    monkeypatch.setenv("GATEWAY_GROUPS", '{"chat_runs": {"rate_limit": {"rate": 3}}}')
    settings = GatewaySettings(common=common_settings, internal_token=TEST_INTERNAL_TOKEN)
    runs = settings.policy("chat_runs")
    assert runs.rate_limit.rate == 3 and runs.rate_limit.burst == 5  # burst kept
    assert runs.read_timeout == 600
    assert settings.policy("knowledge").max_body_bytes == 25 * 1024 * 1024  # untouched


async def test_identity_throttles_the_real_client_ip_behind_the_gateway(platform, account):
    """The gateway passes the client's IP on, so one noisy client can't lock out others."""
    from agentmesh.shared.testing.fixtures import app_client

    email, _ = await account()
    async with app_client(platform.app, client_ip="10.77.0.1") as noisy:
        for i in range(20):
            r = await noisy.post(
                "/api/v1/auth/login", json={"email": f"nobody{i}@example.com", "password": "x" * 14}
            )
            assert r.status_code == 401
        blocked = await noisy.post(
            "/api/v1/auth/login", json={"email": email, "password": "correct horse battery staple"}
        )
        assert blocked.status_code == 429
    async with app_client(platform.app, client_ip="10.77.0.2") as other:
        fine = await other.post(
            "/api/v1/auth/login", json={"email": email, "password": "correct horse battery staple"}
        )
        assert fine.status_code == 200


async def test_failed_authentications_are_rate_limited_per_ip(platform):
    from agentmesh.shared.testing.fixtures import app_client

    authenticator = platform.app.state.authenticator
    before = authenticator.exchanges
    statuses = []
    async with app_client(platform.app, client_ip="10.66.0.1") as guesser:
        for _ in range(22):
            response = await guesser.get(ME, headers={"X-API-Key": "am_guess_not-a-real-secret"})
            statuses.append(response.status_code)
    assert statuses[:20] == [401] * 20
    assert statuses[-1] == 429
    # The same refused key was remembered: identity saw one exchange, not twenty.
    assert authenticator.exchanges == before + 1
    async with app_client(platform.app, client_ip="10.66.0.2") as other:
        assert (await other.get(ME, headers={"X-API-Key": "am_x_y"})).status_code == 401


async def test_forwarded_for_takes_the_rightmost_untrusted_hop(platform, account):
    from agentmesh.shared.testing.fixtures import app_client

    _, token = await account()
    async with app_client(platform.app, client_ip="10.9.9.9") as via_proxy:
        echoed = await via_proxy.get(
            "/api/v1/conversations/echo",
            headers={**bearer(token), "X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.9.9.9"},
        )
    # 6.6.6.6 was written by the client; the trusted proxy appended the real peer.
    assert echoed.json()["headers"]["x-forwarded-for"] == "203.0.113.7"

"""The proxied routes as raw ASGI (``fastpath``): what forwarding keeps besides the
gateway's rules: the methods it forwards, and cookies that stay their client's."""

from __future__ import annotations

from agentmesh.gateway.app import create_app
from agentmesh.shared.testing.fixtures import app_client

from .test_gateway import assert_problem, bearer


async def test_a_method_the_gateway_does_not_forward_is_405(platform, account):
    _, token = await account()
    for path in ("/api/v1/agents", "/nope"):
        response = await platform.request("TRACE", path, headers=bearer(token))
        assert_problem(response, 405, "method-not-allowed")
        assert "GET" in response.headers["allow"]


async def test_an_upstreams_cookie_goes_to_its_client_only(platform, account):
    """The gateway's one HTTP client serves every caller: a cookie an upstream sets is
    passed on to the client it answers, and never sent along with anyone's next request
    (upstreams named by host name, as in docker-compose and Kubernetes)."""
    settings = platform.app.state.settings
    named = settings.model_copy(
        update={"chat_url": settings.chat_url.replace("127.0.0.1", "localhost")}
    )
    _, token = await account()
    _, other = await account()
    async with app_client(create_app(named)) as client:
        first = await client.get("/api/v1/conversations/cookies", headers=bearer(token))
        assert first.headers.get_list("set-cookie") == ["a=1; Path=/; HttpOnly", "b=2; Path=/"]
        client.cookies.clear()
        echoed = await client.get("/api/v1/conversations/echo", headers=bearer(other))
    assert echoed.status_code == 200
    assert "cookie" not in echoed.json()["headers"]

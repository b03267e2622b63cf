"""Model providers: keys encrypted and never shown, a real test call, the credentials RPC."""

from __future__ import annotations

import json
import uuid

import httpx
import nats
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from agentmesh.agents.providers.models import Provider
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, serve_app

PROVIDERS = "/api/v1/providers"
SECRET_KEY = "sk-test-0123456789abcdefWXYZ"


@pytest.fixture
async def openai_like():
    """A local OpenAI-compatible server that knows one key."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return JSONResponse(
                {
                    "error": {
                        "message": "Incorrect API key provided: "
                        + request.headers.get("authorization", "")
                    }
                },
                status_code=401,
            )
        return JSONResponse({"object": "list", "data": [{"id": "gpt-local", "object": "model"}]})

    async with serve_app(app) as base_url:
        yield f"{base_url}/v1"


@pytest.fixture
async def agents(agents_with, openai_like):
    """The agents app with loopback allowed only where this module's providers listen."""
    allowed = [f"127.0.0.1:{httpx.URL(openai_like).port}", "127.0.0.1:9"]
    async with agents_with(allowed_private_hosts=allowed) as client:
        yield client


async def create(agents, headers, **body):
    body = {"kind": "openai", "name": "Local", "api_key": SECRET_KEY, **body}
    response = await agents.post(PROVIDERS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_key_is_encrypted_and_only_its_last_four_are_shown(agents, token_issuer, caplog):
    headers = token_issuer.headers()
    created = await create(agents, headers, base_url="http://127.0.0.1:9/v1")
    assert created["api_key_last4"] == "WXYZ"
    listing = await agents.get(PROVIDERS, headers=headers)
    first = listing.json()["items"][0]
    assert first["id"] == "offline" and first["builtin"] is True
    for response in (listing, await agents.get(f"{PROVIDERS}/{created['id']}", headers=headers)):
        assert SECRET_KEY not in response.text
    async with agents.app.state.sessionmaker() as session:
        stored = await session.scalar(
            select(Provider.api_key_encrypted).where(Provider.id == uuid.UUID(created["id"]))
        )
    assert SECRET_KEY.encode() not in stored
    assert SECRET_KEY not in caplog.text


async def test_test_call_reports_success_and_the_providers_error(agents, token_issuer, openai_like):
    headers = token_issuer.headers()
    good = await create(agents, headers, base_url=openai_like)
    result = (await agents.post(f"{PROVIDERS}/{good['id']}/test", headers=headers)).json()
    assert result["ok"] is True and result["models"] == ["gpt-local"]
    bad = await create(agents, headers, base_url=openai_like, api_key="sk-wrong-key-1234")
    result = (await agents.post(f"{PROVIDERS}/{bad['id']}/test", headers=headers)).json()
    assert result["ok"] is False and result["status"] == 401
    assert result["error"] == "the provider refused the API key (HTTP 401)"
    assert "Incorrect API key" not in str(result)  # the answer's body is never echoed
    down = await create(agents, headers, base_url="http://127.0.0.1:9/v1")
    result = (await agents.post(f"{PROVIDERS}/{down['id']}/test", headers=headers)).json()
    assert result["ok"] is False and "cannot reach" in result["error"]
    assert result["error_type"] == "ConnectError"


async def test_providers_are_private_and_validated(agents, token_issuer):
    owner, stranger = token_issuer.headers(), token_issuer.headers()
    created = await create(agents, owner)
    url = f"{PROVIDERS}/{created['id']}"
    for method in ("GET", "PATCH", "DELETE"):
        response = await agents.request(
            method, url, json={} if method == "PATCH" else None, headers=stranger
        )
        assert response.status_code == 404
    assert [p["id"] for p in (await agents.get(PROVIDERS, headers=stranger)).json()["items"]] == [
        "offline"
    ]
    bad = await agents.post(PROVIDERS, json={"kind": "cohere", "name": "x"}, headers=owner)
    assert bad.status_code == 422
    no_key = await agents.post(PROVIDERS, json={"kind": "anthropic", "name": "x"}, headers=owner)
    assert no_key.status_code == 422
    rekeyed = await agents.patch(url, json={"api_key": "sk-new-key-9876"}, headers=owner)
    assert rekeyed.json()["api_key_last4"] == "9876"
    assert (await agents.delete(url, headers=owner)).status_code == 204
    assert (await agents.get(url, headers=owner)).status_code == 404


async def test_agents_accept_only_their_owners_provider(agents, token_issuer):
    owner_id, other_id = uuid.uuid4(), uuid.uuid4()
    owner, other = token_issuer.headers(owner_id), token_issuer.headers(other_id)
    provider = await create(agents, owner)
    body = {"name": "Bot", "model": "gpt-local", "provider_id": provider["id"]}
    assert (await agents.post("/api/v1/agents", json=body, headers=owner)).status_code == 201
    stolen = await agents.post("/api/v1/agents", json=body, headers=other)
    assert stolen.status_code == 422 and stolen.json()["field"] == "provider_id"


async def test_credentials_rpc_answers_services_only(agents, token_issuer, nats_url):
    owner_id = uuid.uuid4()
    provider = await create(agents, token_issuer.headers(owner_id), base_url="http://llm:8000/v1")
    nc = await nats.connect(nats_url)

    async def ask(body: dict, token: str | None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        reply = await nc.request(
            "agents.rpc.provider.credentials",
            json.dumps(body).encode(),
            timeout=10,
            headers=headers,
        )
        return json.loads(reply.data)

    try:
        mine = {"provider_id": provider["id"], "user_id": str(owner_id)}
        answer = await ask(mine, TEST_INTERNAL_TOKEN)
        assert answer == {
            "provider_id": provider["id"],
            "kind": "openai",
            "base_url": "http://llm:8000/v1",
            "api_key": SECRET_KEY,
        }
        assert await ask(mine, None) == {"error": "unauthorized"}
        assert await ask(mine, "not-the-token") == {"error": "unauthorized"}
        someone_else = {"provider_id": provider["id"], "user_id": str(uuid.uuid4())}
        assert await ask(someone_else, TEST_INTERNAL_TOKEN) == {"error": "not_found"}
        assert await ask({"provider_id": "x"}, TEST_INTERNAL_TOKEN) == {"error": "bad_request"}
    finally:
        await nc.close()

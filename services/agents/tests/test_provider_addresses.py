"""A provider's base_url is checked on create, on update and on every use; the operator's
allow-list admits a local model; the test call never echoes what answered; only the owner
may repoint a provider."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from agentmesh.shared.testing.fixtures import serve_app

PROVIDERS = "/api/v1/providers"
ADDRESS_NOT_ALLOWED = "https://agentmesh.dev/problems/address-not-allowed"
#: What an internal page might hold; the provider test must never hand it back.
INTERNAL_SECRET = "root:x:0:0 internal-admin-token-7f3a"


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == ADDRESS_NOT_ALLOWED and problem["field"] == "base_url"
    assert problem["detail"].startswith("base_url: ")


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:11434",
        "http://localhost:8000/v1",
        "http://[::1]:8000/v1",
        "http://10.0.0.5/v1",
        "http://169.254.169.254/latest",
        "http://[::ffff:127.0.0.1]:8000/v1",
        "http://[fd00:ec2::254]/",
    ],
)
async def test_a_private_base_url_is_refused_on_create_and_update(agents, token_issuer, base_url):
    headers = token_issuer.headers()
    created = await agents.post(
        PROVIDERS, json={"kind": "openai", "name": "x", "base_url": base_url}, headers=headers
    )
    assert_refused(created)
    # A host that does not resolve now is accepted: each use checks it again.
    unresolved = {"kind": "openai", "name": "x", "base_url": "http://llm:8000/v1"}
    ok = await agents.post(PROVIDERS, json=unresolved, headers=headers)
    assert ok.status_code == 201, ok.text
    moved = await agents.patch(
        f"{PROVIDERS}/{ok.json()['id']}", json={"base_url": base_url}, headers=headers
    )
    assert_refused(moved)
    stored = await agents.get(f"{PROVIDERS}/{ok.json()['id']}", headers=headers)
    assert stored.json()["base_url"] == "http://llm:8000/v1"


async def test_ollamas_default_loopback_address_needs_the_operators_allow_list(
    agents, agents_with, token_issuer
):
    headers = token_issuer.headers()
    ollama = {"kind": "ollama", "name": "Local"}
    assert_refused(await agents.post(PROVIDERS, json=ollama, headers=headers))
    async with agents_with(allowed_private_hosts="127.0.0.1:11434, 10.0.0.0/8") as allowing:
        created = await allowing.post(PROVIDERS, json=ollama, headers=headers)
        assert created.status_code == 201, created.text
        url = f"{PROVIDERS}/{created.json()['id']}"
        for allowed in ("http://127.0.0.1:11434", "http://10.1.2.3:8000/v1"):
            moved = await allowing.patch(url, json={"base_url": allowed}, headers=headers)
            assert moved.status_code == 200 and moved.json()["base_url"] == allowed
        assert_refused(
            await allowing.patch(url, json={"base_url": "http://127.0.0.1:11435"}, headers=headers)
        )
        assert_refused(
            await allowing.patch(url, json={"base_url": "http://169.254.169.254/"}, headers=headers)
        )


@pytest.fixture
async def internal_page():
    """A local server that is no model provider: HTML, JSON errors, secrets in bodies."""
    app = FastAPI()

    @app.get("/html/models")
    async def html() -> HTMLResponse:
        return HTMLResponse(f"<html><body>{INTERNAL_SECRET}</body></html>", status_code=403)

    @app.get("/ok-html/models")
    async def ok_html() -> HTMLResponse:
        return HTMLResponse(f"<pre>{INTERNAL_SECRET}</pre>")

    @app.get("/shaped/models")
    async def shaped() -> JSONResponse:
        error = {"type": "invalid_request_error", "message": INTERNAL_SECRET}
        return JSONResponse({"error": error}, status_code=400)

    @app.get("/free-text/models")
    async def free_text() -> JSONResponse:
        return JSONResponse({"error": {"type": INTERNAL_SECRET}}, status_code=500)

    async with serve_app(app) as base_url:
        yield base_url


async def test_the_provider_test_reports_status_and_type_never_the_body(
    agents_with, token_issuer, internal_page
):
    headers = token_issuer.headers()
    allowed = [httpx.URL(internal_page).netloc.decode()]
    expected = {
        "html": (403, None, "the provider refused the API key (HTTP 403)"),
        "ok-html": (200, "unexpected-answer", "the provider's answer is not the expected JSON"),
        "shaped": (400, "invalid_request_error", "the provider refused the call (HTTP 400)"),
        "free-text": (500, None, "the provider failed (HTTP 500)"),
    }
    async with agents_with(allowed_private_hosts=allowed) as agents:
        for path, (status, error_type, error) in expected.items():
            body = {"kind": "openai", "name": path, "base_url": f"{internal_page}/{path}"}
            provider = (await agents.post(PROVIDERS, json=body, headers=headers)).json()
            result = await agents.post(f"{PROVIDERS}/{provider['id']}/test", headers=headers)
            assert result.status_code == 200
            assert INTERNAL_SECRET not in result.text and "internal-admin" not in result.text
            answer = result.json()
            assert answer["ok"] is False and answer["status"] == status, (path, answer)
            assert answer["error_type"] == error_type and answer["error"] == error


async def test_every_use_checks_the_address_again(agents, agents_with, token_issuer, internal_page):
    """Created while the operator allowed it; once the allow-list no longer does, the test
    call is refused before any connection."""
    headers = token_issuer.headers()
    allowed = [httpx.URL(internal_page).netloc.decode()]
    body = {"kind": "openai", "name": "p", "base_url": f"{internal_page}/ok-html"}
    async with agents_with(allowed_private_hosts=allowed) as allowing:
        provider = (await allowing.post(PROVIDERS, json=body, headers=headers)).json()
    result = (await agents.post(f"{PROVIDERS}/{provider['id']}/test", headers=headers)).json()
    assert result["ok"] is False and result["error_type"] == "address-not-allowed"
    assert result["status"] is None and "loopback" in result["error"]


async def test_only_the_workspaces_admins_may_repoint_a_provider(agents, token_issuer):
    """The workspace's admins and owners may change base_url (not only its creator); a
    platform admin who is not an admin of that workspace gets 403 provider-owner-only."""
    import uuid

    team = uuid.uuid4()
    creator = token_issuer.headers(workspace_id=team, workspace_role="owner")
    other_admin = token_issuer.headers(workspace_id=team, workspace_role="admin")
    platform = token_issuer.headers(roles=("user", "admin"))  # bound to its own workspace
    platform_member = token_issuer.headers(
        roles=("user", "admin"), workspace_id=team, workspace_role="member"
    )
    platform_admin_here = token_issuer.headers(
        roles=("user", "admin"), workspace_id=team, workspace_role="admin"
    )
    body = {"kind": "openai", "name": "Mine", "base_url": "http://llm:8000/v1", "api_key": "sk-1"}
    provider = (await agents.post(PROVIDERS, json=body, headers=creator)).json()
    url = f"{PROVIDERS}/{provider['id']}"
    for platform_admin in (platform, platform_member):
        repointed = await agents.patch(
            url, json={"base_url": "https://evil.example/v1"}, headers=platform_admin
        )
        assert repointed.status_code == 403, repointed.text
        assert repointed.json()["type"].endswith("/provider-owner-only")
        assert repointed.json()["field"] == "base_url"
    assert (await agents.get(url, headers=creator)).json()["base_url"] == "http://llm:8000/v1"
    renamed = await agents.patch(url, json={"name": "Renamed"}, headers=platform)
    assert renamed.status_code == 200  # a platform admin may still manage it otherwise
    for who, base_url in (
        (other_admin, "http://llm2:8000/v1"),
        (platform_admin_here, "http://llm3:8000/v1"),
        (creator, "http://llm4:8000/v1"),
    ):
        moved = await agents.patch(url, json={"base_url": base_url}, headers=who)
        assert moved.status_code == 200 and moved.json()["base_url"] == base_url


def test_the_allow_list_is_read_from_agentmesh_allowed_private_hosts(monkeypatch, common_settings):
    from agentmesh.agents.settings import AgentsSettings
    from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, TEST_KEY_ENCRYPTION_KEY

    secrets = {
        "provider_encryption_key": TEST_KEY_ENCRYPTION_KEY,
        "internal_token": TEST_INTERNAL_TOKEN,
    }
    monkeypatch.setenv("AGENTMESH_ALLOWED_PRIVATE_HOSTS", "127.0.0.1:11434, 10.0.0.0/8")
    settings = AgentsSettings(common=common_settings, **secrets)
    assert settings.allowed_private_hosts == ("127.0.0.1:11434", "10.0.0.0/8")
    policy = settings.outbound_policy
    assert policy.endpoints == {("127.0.0.1", 11434)} and not policy.allow_private
    monkeypatch.setenv("AGENTMESH_ALLOWED_PRIVATE_HOSTS", "10.0.0.0/40")
    with pytest.raises(ValueError, match="CIDR"):
        AgentsSettings(common=common_settings, **secrets)

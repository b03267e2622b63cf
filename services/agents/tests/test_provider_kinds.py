"""The azure_openai and mistral provider kinds: what each needs, api_version, a test call."""

from __future__ import annotations

from agentmesh.shared.testing.provider_servers import FakeAzureOpenAI

PROVIDERS = "/api/v1/providers"
AZURE = {
    "kind": "azure_openai",
    "name": "Azure",
    "base_url": "https://res.openai.azure.com",
    "api_key": "azure-key-0123",
    "api_version": "2024-10-21",
}


def assert_invalid(response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in response.text


async def test_each_kind_is_refused_without_what_it_needs(agents, token_issuer):
    headers = token_issuer.headers()
    for missing in ("api_key", "api_version", "base_url"):
        body = {k: v for k, v in AZURE.items() if k != missing}
        assert_invalid(await agents.post(PROVIDERS, json=body, headers=headers), "azure_openai")
    no_key = {"kind": "mistral", "name": "Mistral"}
    assert_invalid(await agents.post(PROVIDERS, json=no_key, headers=headers), "api_key")
    openai = {"kind": "openai", "name": "o", "api_key": "sk-x", "api_version": "2024-10-21"}
    assert_invalid(await agents.post(PROVIDERS, json=openai, headers=headers), "api_version")
    bad = {**AZURE, "api_version": "2024/10?x=1"}  # it goes into a query string
    assert_invalid(await agents.post(PROVIDERS, json=bad, headers=headers), "api_version")


async def test_api_version_is_stored_shown_and_patched(agents, token_issuer):
    headers = token_issuer.headers()
    created = await agents.post(PROVIDERS, json=AZURE, headers=headers)
    assert created.status_code == 201, created.text
    provider = created.json()
    assert provider["kind"] == "azure_openai" and provider["api_version"] == "2024-10-21"
    assert "azure-key-0123" not in created.text
    url = f"{PROVIDERS}/{provider['id']}"
    patched = await agents.patch(url, json={"api_version": "2025-01-01-preview"}, headers=headers)
    assert patched.status_code == 200 and patched.json()["api_version"] == "2025-01-01-preview"
    assert_invalid(
        await agents.patch(url, json={"api_version": None}, headers=headers), "api_version"
    )
    body = {"kind": "mistral", "name": "M", "api_key": "mk-1"}
    mistral = await agents.post(PROVIDERS, headers=headers, json=body)
    assert mistral.status_code == 201 and mistral.json()["api_version"] is None
    refused = await agents.patch(
        f"{PROVIDERS}/{mistral.json()['id']}", headers=headers, json={"api_version": "2024-10-21"}
    )
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("api-version-not-applicable")


async def test_an_azure_test_call_uses_the_api_key_header_and_version(agents_with, token_issuer):
    headers = token_issuer.headers()
    async with (
        FakeAzureOpenAI(models=("gpt-deploy",)) as azure,
        agents_with(allow_private_network=True) as agents,
    ):
        body = {**AZURE, "base_url": azure.base_url, "api_key": azure.azure_key}
        provider = (await agents.post(PROVIDERS, json=body, headers=headers)).json()
        result = (await agents.post(f"{PROVIDERS}/{provider['id']}/test", headers=headers)).json()
        assert result["ok"] is True and result["models"] == ["gpt-deploy"]
        wrong = {**body, "api_key": "not-the-key"}
        provider = (await agents.post(PROVIDERS, json=wrong, headers=headers)).json()
        result = (await agents.post(f"{PROVIDERS}/{provider['id']}/test", headers=headers)).json()
        assert result["ok"] is False and result["status"] == 401

"""``IDENTITY_OIDC_PROVIDERS`` and ``IDENTITY_OIDC_RETURN_URLS`` as operators write them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentmesh.identity.settings import IdentitySettings

CREDENTIALS = {"client_id": "an-id", "client_secret": "a-secret-9f8e7d6c5b4a3f2e1d0c9b8a"}


def load(monkeypatch, **env: str) -> IdentitySettings:
    monkeypatch.setenv("AGENTMESH_ENV", "development")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return IdentitySettings()


def test_presets_need_only_credentials(monkeypatch):
    import json

    providers = {"google": CREDENTIALS, "microsoft": {**CREDENTIALS, "tenant": "t-123"}}
    settings = load(
        monkeypatch,
        IDENTITY_OIDC_PROVIDERS=json.dumps(providers),
        IDENTITY_OIDC_RETURN_URLS="https://app.example.com/a, https://app.example.com/b",
        AGENTMESH_PUBLIC_URL="https://mesh.example.com",
    )
    google, microsoft = settings.oidc_provider("google"), settings.oidc_provider("microsoft")
    assert google is not None and microsoft is not None
    assert google.issuer == "https://accounts.google.com" and google.display_name == "Google"
    assert microsoft.issuer == "https://login.microsoftonline.com/t-123/v2.0"
    assert google.scopes == ["openid", "email", "profile"]
    assert settings.oidc_return_urls == ["https://app.example.com/a", "https://app.example.com/b"]
    assert settings.public_url == "https://mesh.example.com"


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        ('{"microsoft": {"client_id": "a", "client_secret": "b"}}', "tenant"),
        ('{"corp": {"client_id": "a", "client_secret": "b"}}', "issuer is required"),
        (
            '{"Bad Name": {"issuer": "https://x.example.com", "client_id": "a", '
            '"client_secret": "b"}}',
            "provider name",
        ),
        ('{"corp": {"issuer": "https://x.example.com", "client_secret": "b"}}', "client_id"),
    ],
)
def test_a_bad_provider_fails_start_up(monkeypatch, providers, message):
    with pytest.raises(ValidationError, match=message):
        load(monkeypatch, IDENTITY_OIDC_PROVIDERS=providers)


def test_return_urls_must_be_absolute(monkeypatch):
    with pytest.raises(ValidationError, match="absolute"):
        load(monkeypatch, IDENTITY_OIDC_RETURN_URLS="/relative/page")

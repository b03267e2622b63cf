"""Settings of the identity service: ``IDENTITY_*`` plus the shared ``AGENTMESH_*``."""

from typing import Annotated

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from agentmesh.identity.oidc.config import OidcProvider, OidcProviders
from agentmesh.shared.outbound import AllowedPrivateHosts, OutboundPolicy
from agentmesh.shared.settings import ServiceSettings


def _url_list(value: object) -> object:
    """Comma- or space-separated URLs (a JSON list works too)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part for part in text.replace(",", " ").split() if part]
    return value


class IdentitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IDENTITY_", extra="ignore")

    service_name: str = "identity"
    port: int = Field(default=8081, ge=0, le=65535)
    #: Encrypts signing keys at rest (any long random string; a Fernet key is derived).
    #: Several, comma-separated, newest first, while rotating (``agentmesh secrets rotate``).
    key_encryption_key: SecretStr = SecretStr("")
    #: Keys the HMAC of erased emails (unset: derived from the newest key-encryption key).
    email_hash_key: SecretStr | None = None
    #: Callers of /internal/* (the gateway) present this; shared by the platform.
    internal_token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("AGENTMESH_INTERNAL_TOKEN", "IDENTITY_INTERNAL_TOKEN"),
    )
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=24 * 3600)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=300)
    api_key_token_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    #: Live (unrevoked, unexpired) API keys a user may hold; one more is a 409.
    max_api_keys_per_user: int = Field(default=50, ge=1)
    #: How long replicas cache the current signing key (rotation reaches all within this).
    signing_key_cache_seconds: float = Field(default=30.0, ge=0)
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_failures_per_ip: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    #: How long a workspace invitation stays valid.
    invitation_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    #: How often the memberships bucket is reconciled with the database in full.
    membership_resync_seconds: float = Field(default=300.0, gt=0)
    #: Create this admin at start-up if no user has that email (both must be set).
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: SecretStr | None = None
    #: Argon2id cost (OWASP: m=19 MiB, t=2, p=1 as the minimum).
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8 * 1024)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)

    #: ``IDENTITY_OIDC_PROVIDERS``: JSON object of OpenID Connect providers by short name.
    oidc_providers: OidcProviders = Field(default_factory=OidcProviders)
    #: ``IDENTITY_OIDC_RETURN_URLS``: pages a sign-in may return to with a login code.
    oidc_return_urls: Annotated[list[str], NoDecode, BeforeValidator(_url_list)] = Field(
        default_factory=list
    )
    #: How long a started sign-in may take before its callback (state cookie lifetime).
    oidc_flow_ttl_seconds: int = Field(default=600, ge=30, le=3600)
    #: How long a login code handed to a ``return_to`` page stays valid.
    oidc_login_code_ttl_seconds: int = Field(default=60, ge=5, le=600)
    #: Timeout of each call to a provider (discovery, JWKS, token endpoint).
    oidc_http_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    #: How long discovery documents and JWKS are cached (an unknown ``kid`` refetches).
    oidc_cache_seconds: float = Field(default=3600.0, ge=0)
    #: ``AGENTMESH_PUBLIC_URL``: the platform's public base URL; unset, callback URLs are
    #: derived from the request as the gateway forwards it (X-Forwarded-Proto/-Host).
    public_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AGENTMESH_PUBLIC_URL", "IDENTITY_PUBLIC_URL", "public_url"),
    )
    #: Private addresses providers may live at (``host:port`` or CIDR entries).
    allowed_private_hosts: AllowedPrivateHosts = Field(
        default=(),
        validation_alias=AliasChoices(
            "AGENTMESH_ALLOWED_PRIVATE_HOSTS",
            "IDENTITY_ALLOWED_PRIVATE_HOSTS",
            "allowed_private_hosts",
        ),
    )

    @field_validator("oidc_return_urls")
    @classmethod
    def _absolute_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"{url!r} is not an absolute http(s) URL")
        return urls

    @property
    def outbound_policy(self) -> OutboundPolicy:
        """What calls to OpenID Connect providers may reach (metadata: never)."""
        return OutboundPolicy(False, self.allowed_private_hosts)

    def oidc_provider(self, name: str) -> OidcProvider | None:
        return self.oidc_providers.providers.get(name)

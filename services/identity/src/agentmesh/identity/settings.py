"""Settings of the identity service: ``IDENTITY_*`` plus the shared ``AGENTMESH_*``."""

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from agentmesh.shared.settings import ServiceSettings


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

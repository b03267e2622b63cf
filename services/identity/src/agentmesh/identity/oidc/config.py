"""``IDENTITY_OIDC_PROVIDERS``: the providers operators configure, and the presets."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

#: Issuers of the presets: ``google`` and ``microsoft`` (Entra ID, per tenant).
GOOGLE_ISSUER = "https://accounts.google.com"
MICROSOFT_ISSUER = "https://login.microsoftonline.com/{tenant}/v2.0"
PRESET_NAMES = {"google": "Google", "microsoft": "Microsoft"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class OidcProvider(BaseModel):
    """One provider. ``issuer`` may be left out for the ``google`` and ``microsoft``
    presets (``microsoft`` then needs ``tenant``, the Directory (tenant) ID)."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = ""
    client_id: Annotated[str, StringConstraints(min_length=1)]
    client_secret: SecretStr
    display_name: str = ""
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    #: Email domains allowed to sign in (empty: any).
    allowed_domains: list[str] = Field(default_factory=list)
    tenant: str | None = None

    def resolved(self, name: str) -> OidcProvider:
        """This provider with the preset's issuer and display name filled in."""
        issuer, display = self.issuer, self.display_name
        if not issuer and name == "google":
            issuer = GOOGLE_ISSUER
        if not issuer and name == "microsoft":
            if not self.tenant:
                raise ValueError("microsoft: set tenant (the Directory (tenant) ID) or issuer")
            issuer = MICROSOFT_ISSUER.format(tenant=self.tenant)
        if not issuer:
            raise ValueError(f"{name}: issuer is required")
        if not issuer.startswith(("https://", "http://")):
            raise ValueError(f"{name}: issuer must be an http(s) URL")
        scopes = self.scopes if "openid" in self.scopes else ["openid", *self.scopes]
        return self.model_copy(
            update={
                "issuer": issuer.rstrip("/"),
                "display_name": display or PRESET_NAMES.get(name, name),
                "scopes": scopes,
                "allowed_domains": [d.strip().lower().lstrip("@") for d in self.allowed_domains],
            }
        )


class OidcProviders(BaseModel):
    """The providers by their short name (used in URLs and as ``oidc:<name>``)."""

    providers: dict[str, OidcProvider] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, value: Any) -> Any:
        if isinstance(value, dict) and "providers" not in value:
            return {"providers": value}
        return value

    @model_validator(mode="after")
    def _resolve(self) -> OidcProviders:
        for name in self.providers:
            if not NAME.match(name):
                raise ValueError(f"provider name {name!r}: use a-z, 0-9, - and _ (up to 32)")
        self.providers = {n: p.resolved(n) for n, p in self.providers.items()}
        return self

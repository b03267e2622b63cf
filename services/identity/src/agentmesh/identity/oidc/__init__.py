"""Sign-in with OpenID Connect providers (Google, Microsoft Entra ID, any issuer)."""

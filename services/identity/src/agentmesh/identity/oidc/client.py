"""Talking to OpenID Connect providers: discovery, JWKS, the token endpoint, and the
verification of ID tokens (PyJWT).

Every call goes through the platform's guarded client (``agentmesh.shared.outbound``): a
provider on a private address needs an ``AGENTMESH_ALLOWED_PRIVATE_HOSTS`` entry. Discovery
documents and key sets are cached (``IDENTITY_OIDC_CACHE_SECONDS``); a token signed with
a ``kid`` the cached set lacks refetches the set (the provider rotated its keys), at most
once every ``REFETCH_SECONDS``."""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cachetools import TTLCache

from agentmesh.identity.oidc.config import OidcProvider
from agentmesh.identity.oidc.errors import CodeRejected, InvalidIdToken, ProviderUnavailable
from agentmesh.shared.outbound import BlockedAddress, OutboundPolicy, async_client

#: Signature algorithms an ID token may use: asymmetric only (never ``none``, never an
#: HMAC keyed with the client secret).
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
REFETCH_SECONDS = 30.0
LEEWAY_SECONDS = 60
MAX_DOCUMENT_BYTES = 512 * 1024


@dataclass(frozen=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]
    auth_methods: tuple[str, ...]


class OidcClient:
    def __init__(self, policy: OutboundPolicy, *, timeout: float, cache_seconds: float) -> None:
        self.http = async_client(policy, timeout=timeout, follow_redirects=False)
        ttl = max(cache_seconds, 1.0)
        self._discovery: TTLCache[str, Discovery] = TTLCache(maxsize=64, ttl=ttl)
        self._jwks: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=64, ttl=ttl)
        self._fetched_at: dict[str, float] = {}

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self.http.get(url, headers={"Accept": "application/json"})
        except BlockedAddress as exc:
            raise ProviderUnavailable(f"The provider's address is not allowed: {exc}") from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"The provider cannot be reached ({type(exc).__name__})."
            ) from None
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise ProviderUnavailable(f"The provider answered {response.status_code} for {url}.")
        try:
            document = response.json()
        except ValueError:
            raise ProviderUnavailable(f"The provider sent no JSON for {url}.") from None
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"The provider sent no JSON object for {url}.")
        return document

    async def discovery(self, provider: OidcProvider) -> Discovery:
        """The issuer's discovery document; its ``issuer`` must be the configured one."""
        cached = self._discovery.get(provider.issuer)
        if cached is not None:
            return cached
        url = provider.issuer + "/.well-known/openid-configuration"
        doc = await self._get_json(url)
        if str(doc.get("issuer", "")).rstrip("/") != provider.issuer:
            raise ProviderUnavailable("The discovery document names another issuer.")
        try:
            found = Discovery(
                issuer=str(doc["issuer"]),
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                algorithms=tuple(doc.get("id_token_signing_alg_values_supported") or ["RS256"]),
                auth_methods=tuple(
                    doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
                ),
            )
        except KeyError as exc:
            raise ProviderUnavailable(f"The discovery document lacks {exc.args[0]}.") from None
        self._discovery[provider.issuer] = found
        return found

    async def _keys(self, jwks_uri: str, kid: str | None) -> list[dict[str, Any]]:
        jwks = self._jwks.get(jwks_uri)
        stale = jwks is None or (
            kid is not None
            and all(k.get("kid") != kid for k in jwks.get("keys", []))
            and time.monotonic() - self._fetched_at.get(jwks_uri, 0.0) > REFETCH_SECONDS
        )
        if stale:
            jwks = await self._get_json(jwks_uri)
            self._jwks[jwks_uri] = jwks
            self._fetched_at[jwks_uri] = time.monotonic()
        assert jwks is not None
        keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)]
        return [k for k in keys if kid is None or k.get("kid") == kid]

    async def exchange(
        self,
        provider: OidcProvider,
        discovery: Discovery,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
    ) -> str:
        """Swap the authorization code for tokens; returns the ID token."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        secret = provider.client_secret.get_secret_value()
        headers = {"Accept": "application/json"}
        if "client_secret_basic" in discovery.auth_methods:
            # RFC 6749 2.3.1: each part form-encoded before the Basic encoding.
            basic = httpx.BasicAuth(quote(provider.client_id, safe=""), quote(secret, safe=""))
            auth: httpx.Auth | None = basic
        else:
            form |= {"client_id": provider.client_id, "client_secret": secret}
            auth = None
        try:
            # No auth: the client's default, which is none (outbound clients carry no auth).
            response = await self.http.post(
                discovery.token_endpoint,
                data=form,
                headers=headers,
                auth=auth or httpx.USE_CLIENT_DEFAULT,
            )
        except BlockedAddress as exc:
            raise ProviderUnavailable(f"The provider's address is not allowed: {exc}") from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"The provider cannot be reached ({type(exc).__name__})."
            ) from None
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            body = {}
        if response.status_code in (400, 401) and isinstance(body, dict):
            error = str(body.get("error", "invalid_grant"))[:64]
            raise CodeRejected(f"The provider refused the authorization code ({error}).")
        if response.status_code != 200 or not isinstance(body, dict):
            raise ProviderUnavailable(f"The token endpoint answered {response.status_code}.")
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise InvalidIdToken("The provider sent no ID token.")
        return id_token

    async def verify(
        self, provider: OidcProvider, discovery: Discovery, id_token: str, *, nonce: str
    ) -> dict[str, Any]:
        """The ID token's claims once its signature (provider's JWKS, ``alg`` pinned to
        what discovery lists, asymmetric only), ``iss``, ``aud``, ``exp`` and ``nonce``
        check out."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise InvalidIdToken("The ID token is malformed.") from None
        alg = header.get("alg")
        allowed = [a for a in discovery.algorithms if a in ASYMMETRIC]
        if alg not in allowed:
            raise InvalidIdToken(f"The ID token's algorithm {alg!r} is not allowed.")
        kid = header.get("kid")
        candidates = await self._keys(discovery.jwks_uri, kid if isinstance(kid, str) else None)
        claims: dict[str, Any] | None = None
        for jwk in candidates:
            try:
                key = jwt.PyJWK(jwk, algorithm=alg)
                claims = jwt.decode(
                    id_token,
                    key=key,
                    algorithms=[alg],
                    audience=provider.client_id,
                    issuer=discovery.issuer,
                    leeway=LEEWAY_SECONDS,
                    options={"require": ["iss", "aud", "exp", "iat", "sub"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise InvalidIdToken("The ID token has expired.") from None
            except (jwt.PyJWTError, ValueError) as exc:
                raise InvalidIdToken(f"The ID token is invalid ({type(exc).__name__}).") from None
        if claims is None:
            raise InvalidIdToken("The ID token's signature does not match the provider's keys.")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != provider.client_id:
            raise InvalidIdToken("The ID token was issued to another party (azp).")
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise InvalidIdToken("The ID token's nonce is not this sign-in's.")
        return claims

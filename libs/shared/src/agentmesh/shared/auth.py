"""The JWT verifier every service uses, and the ``Principal`` FastAPI dependency.

Access tokens are EdDSA (Ed25519) JWTs signed by identity and published in its JWKS.
The algorithm is pinned, so ``alg: none`` and algorithm confusion (an HS256 token
"signed" with the public key) fail; ``iss``, ``aud`` and ``exp`` are always checked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from agentmesh.shared.errors import Forbidden, ServiceUnavailable, Unauthorized

ALGORITHM = "EdDSA"


class Principal(BaseModel):
    """Who is calling, from a verified access token."""

    model_config = ConfigDict(frozen=True)

    user_id: uuid.UUID
    roles: frozenset[str] = frozenset()
    scopes: tuple[str, ...] = ()
    token_id: str = ""
    expires_at: datetime
    api_key_id: str | None = None
    token: str = Field(default="", repr=False, exclude=True)

    @property
    def is_admin(self) -> bool:
        """True when the token carries the ``admin`` role."""
        return "admin" in self.roles

    def has_scope(self, scope: str) -> bool:
        """True when the token carries ``scope`` (user sessions carry no scopes)."""
        return scope in self.scopes


class JWTVerifier:
    """Verifies access tokens against a JWKS URL, caching the keys.

    An unknown ``kid`` triggers one refetch (rotation), at most once per
    ``refetch_min_interval`` seconds so random kids cannot hammer identity.
    """

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        refetch_min_interval: float = 30.0,
        leeway: float = 5.0,
        jwks_ttl: float = 3600.0,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.refetch_min_interval = refetch_min_interval
        self.leeway = leeway
        self.jwks_ttl = jwks_ttl
        self._client = http_client or httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        self._owns_client = http_client is None
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier created it."""
        if self._owns_client:
            await self._client.aclose()

    async def _fetch(self) -> None:
        try:
            response = await self._client.get(self.jwks_url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self._fetched_at = time.monotonic()  # rate-limit retries against a broken JWKS
            if not self._keys:
                raise ServiceUnavailable("cannot verify tokens right now") from exc
            return
        keys: dict[str, Any] = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "kid" not in jwk:
                continue
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
            except jwt.PyJWTError:
                continue
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _key_for(self, kid: str) -> Any:
        now = time.monotonic()
        stale = self._fetched_at is None or now - self._fetched_at > self.jwks_ttl
        if kid in self._keys and not stale:
            return self._keys[kid]
        async with self._lock:
            now = time.monotonic()
            may_refetch = (
                self._fetched_at is None
                or now - self._fetched_at >= self.refetch_min_interval
                or now - self._fetched_at > self.jwks_ttl
            )
            if may_refetch and (kid not in self._keys or stale):
                await self._fetch()
            key = self._keys.get(kid)
        if key is None:
            if not self._keys and self._fetched_at is not None and not may_refetch:
                raise ServiceUnavailable("cannot verify tokens right now")
            raise Unauthorized("invalid token")
        return key

    async def verify(self, token: str) -> Principal:
        """Verify ``token`` and return its ``Principal``; raises ``Unauthorized`` (401)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise Unauthorized("invalid token")
        key = await self._key_for(header["kid"])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
            user_id = uuid.UUID(str(claims["sub"]))
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthorized("invalid token") from exc
        return Principal(
            user_id=user_id,
            roles=frozenset(str(r) for r in claims.get("roles") or ()),
            scopes=tuple(str(s) for s in claims.get("scopes") or ()),
            token_id=str(claims.get("jti", "")),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            api_key_id=claims.get("akid"),
            token=token,
        )


_bearer = HTTPBearer(auto_error=False, description="An AgentMesh access token")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The verified caller; 401 without a valid bearer token."""
    if credentials is None:
        raise Unauthorized("missing bearer token")
    verifier: JWTVerifier = request.app.state.verifier
    return await verifier.verify(credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    """The verified caller, who must hold the ``admin`` role (else 403)."""
    if not principal.is_admin:
        raise Forbidden("admin role required")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]

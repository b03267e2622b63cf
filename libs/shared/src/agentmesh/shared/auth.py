"""The JWT verifier every service uses, and the ``Principal`` FastAPI dependencies.

Access tokens are EdDSA (Ed25519) JWTs signed by identity, which publishes its public keys
in a JWKS (``/.well-known/jwks.json``). Every service verifies tokens locally:

* the algorithm is pinned to EdDSA, so ``alg: none`` and algorithm confusion (an HS256
  token "signed" with the public key as the HMAC secret) fail;
* ``iss``, ``aud``, ``exp`` and ``sub`` are required and checked on every token;
* the keys are cached by ``kid``; an unknown ``kid`` (key rotation) triggers a refetch,
  at most once per ``refetch_min_interval`` seconds, so a flood of random kids cannot
  hammer identity;
* a failure is an ``Unauthorized`` (401) with a short detail that leaks nothing; when the
  JWKS cannot be fetched and no cached key matches, a ``ServiceUnavailable`` (503);
* every token, cached or not, is checked against the deny list (``deny_list``, fed by a
  JetStream KV watch): a deactivated user's, a logged-out session's and a revoked API
  key's tokens are refused before they expire (see ``agentmesh.shared.denylist``).

Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Annotated, Any, Self

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentmesh.shared.denylist import DenyList
from agentmesh.shared.errors import Forbidden, ServiceUnavailable, Unauthorized

__all__ = [
    "ALGORITHM",
    "AdminPrincipal",
    "CurrentPrincipal",
    "JWTVerifier",
    "Principal",
    "current_principal",
    "require_admin",
]

#: The only signature algorithm access tokens may use.
ALGORITHM = "EdDSA"
#: Claims a token must carry to be considered at all.
REQUIRED_CLAIMS = ("exp", "iss", "aud", "sub")

DETAIL_INVALID = "invalid token"
DETAIL_EXPIRED = "token expired"
DETAIL_UNAVAILABLE = "cannot verify tokens right now"

logger = logging.getLogger("agentmesh.auth")


class Principal(BaseModel):
    """Who is calling, from a verified access token.

    The raw bearer token is kept in ``token`` so a service can forward it to another
    service on the caller's behalf; it is left out of ``repr()`` and of serialization.
    """

    model_config = ConfigDict(frozen=True)

    #: The user id (the token's ``sub``).
    user_id: uuid.UUID
    #: Roles of the user, e.g. ``{"user"}`` or ``{"admin"}``.
    roles: frozenset[str] = frozenset()
    #: Scopes the token was narrowed to (API keys); user sessions carry none.
    scopes: tuple[str, ...] = ()
    #: The token's ``jti``.
    token_id: str = ""
    #: When the token expires (``exp``), timezone-aware UTC.
    expires_at: datetime
    #: The API key the token was issued for (``akid``), if any.
    api_key_id: str | None = None
    #: The login session (refresh-token family) the token belongs to (``sid``), if any.
    session_id: str | None = None
    #: When the token was issued (``iat``), if it says.
    issued_at: datetime | None = None
    #: The workspace the token is bound to (``wid``) and the caller's role there
    #: (``wrole``: owner, admin, member or viewer); None on tokens minted before workspaces.
    workspace_id: uuid.UUID | None = None
    workspace_role: str | None = None
    #: The raw bearer token; never shown by ``repr()`` nor serialized.
    token: str = Field(default="", repr=False, exclude=True)

    @property
    def is_admin(self) -> bool:
        """True when the token carries the ``admin`` role."""
        return "admin" in self.roles

    def has_scope(self, scope: str) -> bool:
        """True when the token carries ``scope``."""
        return scope in self.scopes


class JWTVerifier:
    """Verifies access tokens against identity's JWKS, caching its keys by ``kid``.

    Args:
        jwks_url: Where identity publishes its keys (``.../.well-known/jwks.json``).
        issuer: The expected ``iss`` claim.
        audience: The expected ``aud`` claim.
        http_client: The client used to fetch the JWKS; one is created (and closed by
            ``aclose``) when not given.
        refetch_min_interval: Minimum seconds between two JWKS fetches. An unknown ``kid``
            triggers a refetch only when the last attempt is at least this old.
        leeway: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        jwks_ttl: Seconds after which cached keys are refreshed even for a known ``kid``
            (if that refresh fails, the cached keys keep working).

    Concurrent verifications that need the JWKS share one request.
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
        deny_list: DenyList | None = None,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.refetch_min_interval = refetch_min_interval
        self.leeway = leeway
        self.jwks_ttl = jwks_ttl
        #: Revoked tokens (users, sessions, API keys); checked on every ``verify``.
        self.deny_list = deny_list
        self._owns_client = http_client is None
        self._client = (
            http_client
            if http_client is not None
            else httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
        )
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None  # last successful fetch (for the TTL)
        self._attempted_at: float | None = None  # last attempt (for the rate limit)
        self._last_fetch_failed = False
        self._lock = asyncio.Lock()
        #: Verified tokens by digest, with the key that verified them, until they expire.
        #: A token never changes, so its signature and claims are checked once, not on
        #: every request (an EdDSA check and two JSON decodes). A refreshed JWKS (or a
        #: stale one) sends every token through the full check again, so a retired key
        #: stops the tokens it signed as soon as the verifier learns of it.
        self._verified: dict[bytes, tuple[Principal, str, Any]] = {}
        self.verified_cache_size = 10_000

    async def __aenter__(self) -> Self:
        """Use the verifier as an async context manager; ``aclose`` on exit."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the HTTP client if this verifier created it."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier created it (a given client is left open)."""
        if self._owns_client:
            await self._client.aclose()

    # -- keys -------------------------------------------------------------------------------

    def _is_stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at > self.jwks_ttl

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.refetch_min_interval

    async def _fetch(self) -> None:
        """Fetch the JWKS and replace the cached keys; on failure keep the old ones."""
        self._attempted_at = time.monotonic()
        try:
            response = await self._client.get(self.jwks_url)
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            self._last_fetch_failed = True
            logger.warning(
                "cannot fetch the JWKS",
                extra={"jwks_url": self.jwks_url, "error": type(exc).__name__},
            )
            return
        self._keys = keys
        self._fetched_at = time.monotonic()
        self._last_fetch_failed = False

    async def _key_for(self, kid: str) -> Any:
        """The public key for ``kid``, fetching the JWKS when needed and allowed."""
        key = self._keys.get(kid)
        if key is not None and not self._is_stale(time.monotonic()):
            return key
        async with self._lock:
            # Another task may have fetched while this one waited for the lock.
            key = self._keys.get(kid)
            now = time.monotonic()
            if (key is None or self._is_stale(now)) and self._may_fetch(now):
                await self._fetch()
                key = self._keys.get(kid)
            if key is not None:
                return key  # possibly from a stale cache when identity is unreachable
            if self._last_fetch_failed:
                raise ServiceUnavailable(DETAIL_UNAVAILABLE)
            raise Unauthorized(DETAIL_INVALID)

    # -- tokens -----------------------------------------------------------------------------

    async def verify(self, token: str) -> Principal:
        """Verify ``token`` and return its ``Principal``.

        Raises:
            Unauthorized: The token is malformed, not signed by a published key, expired,
                or meant for another issuer or audience (401, detail ``"invalid token"`` or
                ``"token expired"``).
            ServiceUnavailable: The JWKS cannot be fetched and no cached key matches (503).
        """
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(digest)
        if (
            hit is not None
            and hit[0].expires_at.timestamp() > time.time()
            and self._keys.get(hit[1]) is hit[2]  # the key that verified it is still current
            and not self._is_stale(time.monotonic())
        ):
            return self._not_denied(hit[0])
        principal, kid, key = await self._verify(token)
        self._verified[digest] = (principal, kid, key)
        while len(self._verified) > self.verified_cache_size:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        return self._not_denied(principal)

    def _not_denied(self, principal: Principal) -> Principal:
        if self.deny_list is not None:
            reason = self.deny_list.refusal(
                user_id=principal.user_id,
                issued_at=principal.issued_at.timestamp() if principal.issued_at else None,
                session_id=principal.session_id,
                api_key_id=principal.api_key_id,
            )
            if reason is not None:
                raise Unauthorized(reason)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthorized(DETAIL_INVALID) from exc
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str) or not kid:
            raise Unauthorized(DETAIL_INVALID)
        key = await self._key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized(DETAIL_EXPIRED) from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthorized(DETAIL_INVALID) from exc
        try:
            return _principal(claims, token), kid, key
        except (ValueError, TypeError, OverflowError, OSError, ValidationError) as exc:
            raise Unauthorized(DETAIL_INVALID) from exc


def _parse_jwks(document: Any) -> dict[str, Any]:
    """The Ed25519 signing keys of a JWKS document, by ``kid``; other keys are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, Any] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        kid = jwk.get("kid")
        if (
            jwk.get("kty") != "OKP"
            or jwk.get("crv") != "Ed25519"
            or not isinstance(kid, str)
            or not kid
            or jwk.get("alg", ALGORITHM) != ALGORITHM
            or jwk.get("use", "sig") != "sig"
            or "d" in jwk  # a private key was published by mistake: refuse it
        ):
            continue
        try:
            keys[kid] = jwt.PyJWK(dict(jwk), algorithm=ALGORITHM).key
        except jwt.PyJWTError:
            continue
    return keys


def _string_list(claims: Mapping[str, Any], name: str) -> list[str]:
    """A claim that must be a list of strings (absent or null: empty)."""
    value = claims.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be a list of strings")
    return value


def _principal(claims: Mapping[str, Any], token: str) -> Principal:
    """The ``Principal`` of verified ``claims``; raises ``ValueError`` on malformed claims."""
    sub = claims["sub"]
    if not isinstance(sub, str):
        raise ValueError("sub must be a string")
    jti = claims.get("jti", "")
    api_key_id = claims.get("akid")
    session_id = claims.get("sid")
    if not isinstance(jti, str) or not all(
        value is None or isinstance(value, str) for value in (api_key_id, session_id)
    ):
        raise ValueError("jti, akid and sid must be strings")
    iat = claims.get("iat")
    wid, wrole = claims.get("wid"), claims.get("wrole")
    if not (wid is None or isinstance(wid, str)) or not (wrole is None or isinstance(wrole, str)):
        raise ValueError("wid and wrole must be strings")
    return Principal(
        user_id=uuid.UUID(sub),
        roles=frozenset(_string_list(claims, "roles")),
        scopes=tuple(_string_list(claims, "scopes")),
        token_id=jti,
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        api_key_id=api_key_id,
        session_id=session_id,
        issued_at=None if iat is None else datetime.fromtimestamp(iat, UTC),
        workspace_id=uuid.UUID(wid) if wid else None,
        workspace_role=wrole if wid else None,
        token=token,
    )


# -- FastAPI dependencies ---------------------------------------------------------------------

#: The bearer scheme; using it as a dependency documents the security scheme in OpenAPI.
bearer_scheme = HTTPBearer(auto_error=False, description="An AgentMesh access token")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The verified caller, from the ``Authorization: Bearer`` header.

    Uses the ``JWTVerifier`` at ``request.app.state.verifier``. Raises ``Unauthorized``
    (401, ``WWW-Authenticate: Bearer``) without a valid bearer token.
    """
    if credentials is None:
        raise Unauthorized("missing bearer token")
    verifier: JWTVerifier | None = getattr(request.app.state, "verifier", None)
    if verifier is None:
        raise RuntimeError("app.state.verifier is not set: create a JWTVerifier at start-up")
    principal = await verifier.verify(credentials.credentials)
    note_principal(request, principal.user_id, principal.api_key_id)
    return principal


def note_principal(request: Request, user_id: object, api_key_id: str | None) -> None:
    """Let the access log name who called (ids only, never a token)."""
    request.state.principal_user_id = str(user_id)
    request.state.principal_api_key_id = api_key_id


#: A route parameter annotated with this receives the verified caller.
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    """The verified caller, who must hold the ``admin`` role (else ``Forbidden``, 403)."""
    if not principal.is_admin:
        raise Forbidden("admin role required")
    return principal


#: A route parameter annotated with this receives the verified caller, who is an admin.
AdminPrincipal = Annotated[Principal, Depends(require_admin)]

"""Who is calling: a verified access token, or an API key exchanged with identity.

Exchanged tokens are cached until shortly before they expire, and evicted when identity
broadcasts ``identity.apikey.revoked``, ``identity.user.deactivated`` or
``identity.user.deleted``. Tokens of a deactivated user are refused until they expire.
Every caller, cached or not, is also checked against the platform's deny list (the
verifier's, watched from JetStream KV), which a replica that missed a broadcast still has.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp
import jwt
from starlette.datastructures import Headers

from agentmesh.gateway.metrics import API_KEY_CACHE
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.gateway.shared_limits import SharedLimits
from agentmesh.shared.auth import JWTVerifier
from agentmesh.shared.errors import AppError, ServiceUnavailable, Unauthorized


class InvalidApiKey(Unauthorized):
    type, title = "invalid-api-key", "Invalid API key"


@dataclass(frozen=True)
class Caller:
    """A verified caller: the token to send upstream and the rate-limit key."""

    token: str
    user_id: uuid.UUID
    api_key_id: str | None
    session_id: str | None = None
    issued_at: float | None = None

    @property
    def limit_keys(self) -> tuple[str, ...]:
        """The buckets a request takes from: the API key's, and always the user's, so
        many keys do not multiply a user's rate."""
        user = f"user:{self.user_id}"
        return (f"key:{self.api_key_id}", user) if self.api_key_id else (user,)


@dataclass
class CachedKey:
    caller: Caller
    valid_until: float


def credentials(headers: Headers) -> tuple[str, str] | None:
    """("jwt" | "api_key", value) from ``Authorization: Bearer`` or ``X-API-Key``."""
    api_key = headers.get("x-api-key")
    if api_key:
        return "api_key", api_key.strip()
    scheme, _, value = headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return ("api_key" if value.startswith("am_") else "jwt"), value


class Authenticator:
    def __init__(
        self,
        settings: GatewaySettings,
        session: aiohttp.ClientSession,
        verifier: JWTVerifier,
        shared: SharedLimits | None = None,
    ) -> None:
        self.settings = settings
        #: Refused API keys are also remembered there, for every replica.
        self.shared = shared
        self.session = session
        self.verifier = verifier
        self.exchange_url = f"{settings.upstreams()['identity']}/internal/api-keys/exchange"
        self._keys: OrderedDict[str, CachedKey] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Caller]] = {}
        self._denied_users: dict[uuid.UUID, float] = {}
        #: Verified JWTs by digest, until they expire: a token is immutable, so checking
        #: its signature once is enough (expiry and the deny list are checked every time).
        self._verified: OrderedDict[str, tuple[Caller, float]] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()
        self.exchanges = 0

    async def authenticate(self, headers: Headers) -> Caller:
        found = credentials(headers)
        if found is None:
            raise Unauthorized("missing bearer token or API key")
        kind, value = found
        caller = await (self._api_key(value) if kind == "api_key" else self._jwt(value))
        deny_list = self.verifier.deny_list
        if deny_list is not None:
            reason = deny_list.refusal(
                user_id=caller.user_id,
                issued_at=caller.issued_at,
                session_id=caller.session_id,
                api_key_id=caller.api_key_id,
            )
            if reason is not None:
                raise Unauthorized(reason)
        denied_until = self._denied_users.get(caller.user_id)
        if denied_until is not None:
            if denied_until > time.monotonic():
                raise Unauthorized("account is not active")
            del self._denied_users[caller.user_id]
        return caller

    async def _jwt(self, token: str) -> Caller:
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self._verified.get(digest)
        if hit is not None and hit[1] > time.time():
            return hit[0]
        principal = await self.verifier.verify(token)
        caller = Caller(
            token=token,
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
            session_id=principal.session_id,
            issued_at=principal.issued_at.timestamp() if principal.issued_at else None,
        )
        self._verified[digest] = (caller, principal.expires_at.timestamp())
        if len(self._verified) > self.settings.api_key_cache_size:
            self._verified.popitem(last=False)
        return caller

    async def _api_key(self, key: str) -> Caller:
        digest = hashlib.sha256(key.encode()).hexdigest()
        cached = self._keys.get(digest)
        if cached is not None and cached.valid_until > time.monotonic():
            self._keys.move_to_end(digest)
            API_KEY_CACHE.labels("hit").inc()
            return cached.caller
        refused_until = self._refused.get(digest)
        if refused_until is not None and refused_until > time.monotonic():
            API_KEY_CACHE.labels("refused").inc()
            raise InvalidApiKey("The API key is invalid, expired or revoked.")
        inflight = self._inflight.get(digest)
        if inflight is not None:  # concurrent first uses share one exchange
            return await asyncio.shield(inflight)
        if self.shared is not None and self.settings.api_key_negative_cache_seconds > 0:
            until = await self.shared.refused_until(digest)  # refused by another replica?
            if until is not None:
                self._remember_refused(digest, time.monotonic() + until - time.time())
                API_KEY_CACHE.labels("refused").inc()
                raise InvalidApiKey("The API key is invalid, expired or revoked.")
            inflight = self._inflight.get(digest)  # started while we looked
            if inflight is not None:
                return await asyncio.shield(inflight)
        API_KEY_CACHE.labels("miss").inc()
        future: asyncio.Future[Caller] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            caller, expires_in = await self._exchange(key)
            margin = min(self.settings.api_key_cache_margin_seconds, expires_in / 2)
            self._keys[digest] = CachedKey(caller, time.monotonic() + expires_in - margin)
            if len(self._keys) > self.settings.api_key_cache_size:
                self._keys.popitem(last=False)
            future.set_result(caller)
            return caller
        except BaseException as exc:
            if isinstance(exc, InvalidApiKey):
                seconds = self.settings.api_key_negative_cache_seconds
                self._remember_refused(digest, time.monotonic() + seconds)
                if self.shared is not None and seconds > 0:
                    await self.shared.remember_refused(digest, time.time() + seconds)
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[digest]

    def _remember_refused(self, digest: str, until: float) -> None:
        self._refused[digest] = until
        if len(self._refused) > self.settings.api_key_cache_size:
            self._refused.popitem(last=False)

    async def _exchange(self, key: str) -> tuple[Caller, float]:
        self.exchanges += 1
        token = self.settings.internal_token.get_secret_value()
        try:
            async with self.session.post(
                self.exchange_url,
                json={"key": key},
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=5, sock_connect=1),
            ) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ServiceUnavailable("cannot check API keys right now") from exc
        if status in (401, 403, 422):
            raise InvalidApiKey("The API key is invalid, expired or revoked.")
        if status != 200:
            raise AppError(
                "cannot check API keys right now",
                status=503,
                type="service-unavailable",
                title="Service Unavailable",
            )
        try:  # from identity itself over the internal call: only its iat is read here
            issued_at = jwt.decode(body["access_token"], options={"verify_signature": False})["iat"]
        except (jwt.PyJWTError, KeyError):
            issued_at = None
        caller = Caller(
            token=body["access_token"],
            user_id=uuid.UUID(body["user_id"]),
            api_key_id=body["api_key_id"],
            issued_at=issued_at,
        )
        return caller, float(body["expires_in"])

    # ------------------------------------------------------------------ eviction

    def evict_api_key(self, api_key_id: str) -> int:
        """Drop every cached token of ``api_key_id``; returns how many."""
        stale = [d for d, c in self._keys.items() if c.caller.api_key_id == api_key_id]
        for digest in stale:
            del self._keys[digest]
        return len(stale)

    def allow_user(self, user_id: uuid.UUID) -> None:
        """A re-activated user's tokens work again; cached ones are dropped all the same,
        so a changed role is picked up by the next exchange."""
        self._denied_users.pop(user_id, None)
        self.forget_user(user_id)

    def forget_user(self, user_id: uuid.UUID) -> None:
        """Drop what is cached for the user (exchanged key tokens, verified JWTs)."""
        for digest in [d for d, c in self._keys.items() if c.caller.user_id == user_id]:
            del self._keys[digest]
        for digest in [d for d, (c, _) in self._verified.items() if c.user_id == user_id]:
            del self._verified[digest]

    def evict_user(self, user_id: uuid.UUID) -> int:
        """Drop the user's cached tokens and refuse their access tokens until expiry."""
        self._denied_users[user_id] = time.monotonic() + self.settings.access_token_ttl_seconds + 60
        stale = [d for d, c in self._keys.items() if c.caller.user_id == user_id]
        for digest in stale:
            del self._keys[digest]
        for digest in [d for d, (c, _) in self._verified.items() if c.user_id == user_id]:
            del self._verified[digest]
        return len(stale)

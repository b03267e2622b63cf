"""The shared JWT verifier against a JWKS served over real HTTP (uvicorn on loopback).

The JWKS server's key set can be changed by a test, it can be made slow or failing, and
it counts requests, so the refetch rate limit is asserted on real traffic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentmesh.shared.auth import (
    AdminPrincipal,
    CurrentPrincipal,
    JWTVerifier,
    Principal,
)
from agentmesh.shared.errors import (
    PROBLEM_JSON,
    ServiceUnavailable,
    Unauthorized,
    install_error_handlers,
)
from agentmesh.shared.testing.fixtures import serve_app
from agentmesh.shared.testing.jwt_keys import SigningKey, jwks, make_claims

ISSUER, AUDIENCE = "agentmesh-identity", "agentmesh"
JWKS_PATH = "/.well-known/jwks.json"


class JwksServer:
    """A JWKS endpoint over real HTTP whose keys a test changes; it counts requests."""

    def __init__(self) -> None:
        self.app = Starlette(routes=[Route(JWKS_PATH, self._jwks)])
        self.url = ""
        self.reset()

    def reset(self) -> None:
        self.keys: list[SigningKey] = [SigningKey()]
        self.requests = 0
        self.status = 200
        self.delay = 0.0

    @property
    def key(self) -> SigningKey:
        return self.keys[0]

    async def _jwks(self, request: Request) -> JSONResponse:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return JSONResponse({"error": "unavailable"}, status_code=self.status)
        return JSONResponse(jwks(self.keys))


@pytest.fixture(scope="module")
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    async with serve_app(server.app) as base_url:
        server.url = base_url + JWKS_PATH
        yield server


@pytest.fixture
def server(jwks_server: JwksServer) -> JwksServer:
    """The JWKS server with one fresh key and its request counter at zero."""
    jwks_server.reset()
    return jwks_server


@pytest.fixture
async def verifier(server: JwksServer) -> AsyncIterator[JWTVerifier]:
    async with JWTVerifier(server.url, ISSUER, AUDIENCE) as v:
        yield v


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def sign_by_hand(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A genuinely EdDSA-signed JWT with any header (PyJWT refuses odd ``kid`` values)."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    return f"{signing_input}.{b64(key.private_key.sign(signing_input.encode()))}"


def user_token(server: JwksServer, **kwargs: Any) -> str:
    return server.key.sign(make_claims(uuid.uuid4(), **kwargs))


async def rejected(verifier: JWTVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as error:
        await verifier.verify(token)
    assert error.value.status == 401
    return error.value


# -- good tokens ---------------------------------------------------------------------------


async def test_good_token_gives_a_principal(server, verifier):
    user_id = uuid.uuid4()
    claims = make_claims(user_id, roles=("user",), scopes=("agents:read", "chat"), akid="k1")
    token = server.key.sign(claims)

    principal = await verifier.verify(token)

    assert isinstance(principal, Principal)
    assert principal.user_id == user_id
    assert principal.roles == frozenset({"user"})
    assert principal.scopes == ("agents:read", "chat")
    assert principal.token_id == claims["jti"]
    assert principal.expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    assert principal.api_key_id == "k1"
    assert principal.token == token
    assert not principal.is_admin
    assert principal.has_scope("chat") and not principal.has_scope("admin")
    assert (await verifier.verify(token)) == principal
    assert server.requests == 1  # the keys are cached


async def test_admin_role_and_absent_scopes(server, verifier):
    claims = make_claims(uuid.uuid4(), roles=("admin",), scopes=None)
    assert "scopes" not in claims
    principal = await verifier.verify(server.key.sign(claims))
    assert principal.is_admin
    assert principal.scopes == ()
    assert not principal.has_scope("chat")


async def test_principal_hides_the_token_and_is_frozen(server, verifier):
    token = user_token(server)
    principal = await verifier.verify(token)
    assert token not in repr(principal)
    assert token not in str(principal)
    assert "token" not in principal.model_dump()
    assert token not in principal.model_dump_json()
    with pytest.raises(ValidationError):
        principal.user_id = uuid.uuid4()


async def test_token_expired_within_the_leeway_is_accepted(server):
    token = user_token(server, ttl=-2)
    async with JWTVerifier(server.url, ISSUER, AUDIENCE, leeway=5) as lenient:
        await lenient.verify(token)
    async with JWTVerifier(server.url, ISSUER, AUDIENCE, leeway=0) as strict:
        assert (await rejected(strict, token)).detail == "token expired"


# -- bad tokens ----------------------------------------------------------------------------


async def test_expired_token_is_rejected(server, verifier):
    error = await rejected(verifier, user_token(server, ttl=-60))
    assert error.detail == "token expired"
    assert error.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "change", [{"audience": "someone-else"}, {"issuer": "https://evil.example"}], ids=str
)
async def test_wrong_audience_or_issuer_is_rejected(server, verifier, change):
    error = await rejected(verifier, user_token(server, **change))
    assert error.detail == "invalid token"


@pytest.mark.parametrize("claim", ["exp", "sub", "iss", "aud"])
async def test_missing_required_claim_is_rejected(server, verifier, claim):
    claims = make_claims(uuid.uuid4())
    del claims[claim]
    assert (await rejected(verifier, server.key.sign(claims))).detail == "invalid token"


@pytest.mark.parametrize(
    "change",
    [
        {"sub": "not-a-uuid"},
        {"sub": 42},
        {"roles": "admin"},  # a string, not a list: must not become {"a", "d", "m", ...}
        {"scopes": 5},
        {"exp": 10**13},  # beyond what a datetime can hold
    ],
    ids=str,
)
async def test_malformed_claims_are_rejected(server, verifier, change):
    token = server.key.sign({**make_claims(uuid.uuid4()), **change})
    assert (await rejected(verifier, token)).detail == "invalid token"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_rejected(server, verifier, alg):
    header = b64json({"alg": alg, "typ": "JWT", "kid": server.key.kid})
    payload = b64json(make_claims(uuid.uuid4(), roles=("admin",)))
    await rejected(verifier, f"{header}.{payload}.")


@pytest.mark.parametrize("secret", ["raw", "pem", "jwk-x"])
async def test_hs256_signed_with_the_public_key_is_rejected(server, verifier, secret):
    """Algorithm confusion: the public key, which anyone can fetch, as an HMAC secret."""
    key = server.key
    material = {
        "raw": key.public_raw,
        "pem": key.public_pem,
        "jwk-x": key.public_jwk()["x"].encode(),
    }[secret]
    header = b64json({"alg": "HS256", "typ": "JWT", "kid": key.kid})
    payload = b64json(make_claims(uuid.uuid4(), roles=("admin",)))
    signature = b64(hmac.new(material, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    await rejected(verifier, f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("kid", ["absent", "empty", "number", "list"])
async def test_token_without_a_usable_kid_is_rejected(server, verifier, kid):
    header: dict[str, Any] = {"alg": "EdDSA", "typ": "JWT"}
    header.update({"empty": {"kid": ""}, "number": {"kid": 1}}.get(kid, {}))
    if kid == "list":
        header["kid"] = [server.key.kid]
    token = sign_by_hand(server.key, header, make_claims(uuid.uuid4()))
    assert (await rejected(verifier, token)).detail == "invalid token"


async def test_hand_signed_tokens_are_valid(server, verifier):
    """The control for the test above: ``sign_by_hand`` makes tokens the verifier accepts."""
    header = {"alg": "EdDSA", "typ": "JWT", "kid": server.key.kid}
    await verifier.verify(sign_by_hand(server.key, header, make_claims(uuid.uuid4())))


async def test_tampered_payload_is_rejected(server, verifier):
    token = user_token(server, roles=("user",))
    await verifier.verify(token)  # the untouched token is fine
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    await rejected(verifier, f"{header}.{b64json(claims)}.{signature}")


async def test_token_signed_by_another_key_with_a_published_kid_is_rejected(server, verifier):
    impostor = SigningKey(kid=server.key.kid)
    await rejected(verifier, impostor.sign(make_claims(uuid.uuid4())))


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "...", "é.é.é"])
async def test_garbage_is_rejected(verifier, token):
    assert (await rejected(verifier, token)).detail == "invalid token"


# -- key rotation and the refetch rate limit ----------------------------------------------


async def test_rotated_key_is_accepted_after_one_refetch(server):
    async with JWTVerifier(server.url, ISSUER, AUDIENCE, refetch_min_interval=0.2) as verifier:
        await verifier.verify(user_token(server))
        assert server.requests == 1
        rotated = SigningKey()
        server.keys.append(rotated)
        await asyncio.sleep(0.25)

        principal = await verifier.verify(rotated.sign(make_claims(uuid.uuid4())))
        assert principal.roles == frozenset({"user"})
        assert server.requests == 2  # exactly one refetch, for the unknown kid
        await verifier.verify(rotated.sign(make_claims(uuid.uuid4())))
        await verifier.verify(user_token(server))  # the old key still works too
        assert server.requests == 2


async def test_unknown_kid_is_rejected_and_refetches_are_rate_limited(server):
    interval = 0.5
    async with JWTVerifier(server.url, ISSUER, AUDIENCE, refetch_min_interval=interval) as verifier:
        await verifier.verify(user_token(server))
        assert server.requests == 1
        await asyncio.sleep(interval + 0.05)

        # An unknown kid triggers one refetch; the kid is not there, so: rejected.
        stranger = SigningKey()
        started = time.monotonic()
        await rejected(verifier, stranger.sign(make_claims(uuid.uuid4())))
        assert server.requests == 2

        # A flood of unknown kids within the interval makes no further request.
        flood = [SigningKey().sign(make_claims(uuid.uuid4())) for _ in range(20)]
        results = await asyncio.gather(
            *(verifier.verify(token) for token in flood), return_exceptions=True
        )
        await rejected(verifier, stranger.sign(make_claims(uuid.uuid4())))
        assert time.monotonic() - started < interval, "the machine is too slow for this test"
        assert all(isinstance(result, Unauthorized) for result in results)
        assert server.requests == 2

        # Once the interval has passed, an unknown kid may refetch again.
        await asyncio.sleep(interval + 0.05)
        await rejected(verifier, stranger.sign(make_claims(uuid.uuid4())))
        assert server.requests == 3


async def test_concurrent_first_verifications_share_one_fetch(server, verifier):
    server.delay = 0.1
    tokens = [user_token(server) for _ in range(10)]
    principals = await asyncio.gather(*(verifier.verify(token) for token in tokens))
    assert len({p.token_id for p in principals}) == 10
    assert server.requests == 1


async def test_keys_are_refreshed_after_the_ttl(server):
    async with JWTVerifier(
        server.url, ISSUER, AUDIENCE, jwks_ttl=0.2, refetch_min_interval=0.2
    ) as verifier:
        retired_token = user_token(server)
        await verifier.verify(retired_token)
        server.keys = [SigningKey()]  # the old key is retired
        await verifier.verify(retired_token)  # still cached
        assert server.requests == 1
        await asyncio.sleep(0.25)
        await rejected(verifier, retired_token)
        assert server.requests == 2


class ShiftedClock:
    """Wall clock ``offset`` seconds ahead, for the verifier's cache and PyJWT's checks.

    Moving the clock instead of sleeping past a short-lived token's ``exp`` keeps the test
    independent of how long signing and the first JWKS fetch take on a loaded machine.
    """

    def __init__(self) -> None:
        self.offset = 0.0
        clock = self

        class Shifted(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
                return datetime.fromtimestamp(clock.time(), tz)

        self.datetime = Shifted

    def time(self) -> float:
        return time.time() + self.offset

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()


async def test_a_verified_token_is_not_checked_again_until_it_expires(server, monkeypatch):
    import jwt as pyjwt
    import jwt.api_jwt

    import agentmesh.shared.auth as auth_module

    decodes = 0
    real_decode = pyjwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal decodes
        decodes += 1
        return real_decode(*args, **kwargs)

    clock = ShiftedClock()
    monkeypatch.setattr(pyjwt, "decode", counting_decode)
    monkeypatch.setattr(auth_module, "time", clock)
    monkeypatch.setattr(jwt.api_jwt, "datetime", clock.datetime)
    async with JWTVerifier(server.url, ISSUER, AUDIENCE, leeway=0) as verifier:
        token = server.key.sign(make_claims(uuid.uuid4(), ttl=60))
        first = await verifier.verify(token)
        assert await verifier.verify(token) == first and decodes == 1
        other = user_token(server)
        await verifier.verify(other)
        assert decodes == 2  # a new token is checked in full
        clock.offset = 61  # past exp: checked again, and refused
        assert (await rejected(verifier, token)).detail == "token expired"
        assert decodes == 3
        verifier.verified_cache_size = 1
        await verifier.verify(user_token(server))
        assert len(verifier._verified) == 1


# -- identity unreachable -------------------------------------------------------------------


async def test_jwks_unreachable_is_503():
    url = f"http://127.0.0.1:{free_port()}{JWKS_PATH}"  # nothing listens there
    async with JWTVerifier(url, ISSUER, AUDIENCE) as verifier:
        token = SigningKey().sign(make_claims(uuid.uuid4()))
        for _ in range(2):  # the second attempt is rate-limited, and still a 503
            with pytest.raises(ServiceUnavailable) as error:
                await verifier.verify(token)
            assert error.value.status == 503
            assert error.value.detail == "cannot verify tokens right now"


async def test_jwks_error_status_is_503(server, verifier):
    server.status = 500
    with pytest.raises(ServiceUnavailable):
        await verifier.verify(user_token(server))
    assert server.requests == 1


async def test_cached_keys_keep_working_while_the_jwks_is_down(server):
    async with JWTVerifier(
        server.url, ISSUER, AUDIENCE, jwks_ttl=0, refetch_min_interval=0
    ) as verifier:
        await verifier.verify(user_token(server))
        server.status = 503
        await verifier.verify(user_token(server))  # stale, refetch failed: cached key used
        assert server.requests == 2
        # A kid that no cached key matches cannot be checked now: 503, not 401.
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(SigningKey().sign(make_claims(uuid.uuid4())))
        server.status = 200
        await rejected(verifier, SigningKey().sign(make_claims(uuid.uuid4())))


async def test_the_token_is_never_logged(server, caplog):
    caplog.set_level(logging.DEBUG)
    good, expired = user_token(server), user_token(server, ttl=-60)
    stranger = SigningKey().sign(make_claims(uuid.uuid4()))
    tokens = [good, expired, stranger]
    async with JWTVerifier(server.url, ISSUER, AUDIENCE, refetch_min_interval=0) as verifier:
        server.status = 500
        for token in tokens:
            with pytest.raises(ServiceUnavailable):
                await verifier.verify(token)
        server.status = 200
        await verifier.verify(good)
        await rejected(verifier, expired)
        await rejected(verifier, stranger)
    assert any(record.name == "agentmesh.auth" for record in caplog.records)  # the outage
    logged = " ".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    for token in tokens:
        assert token not in logged
        assert token.split(".")[1] not in logged


async def test_aclose_leaves_a_given_client_open(server):
    async with httpx.AsyncClient() as client:
        verifier = JWTVerifier(server.url, ISSUER, AUDIENCE, http_client=client)
        await verifier.verify(user_token(server))
        await verifier.aclose()
        assert not client.is_closed
        assert (await client.get(server.url)).status_code == 200


# -- FastAPI dependencies -----------------------------------------------------------------


def protected_app(verifier: JWTVerifier) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.verifier = verifier

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"user_id": str(principal.user_id)}

    @app.get("/admin")
    async def admin(principal: AdminPrincipal) -> dict[str, str]:
        return {"admin": str(principal.user_id)}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_fastapi_dependencies(server, verifier):
    app = protected_app(verifier)
    user_id = uuid.uuid4()
    user = server.key.sign(make_claims(user_id, roles=("user",)))
    admin = server.key.sign(make_claims(uuid.uuid4(), roles=("admin",)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        missing = await client.get("/me")
        basic = await client.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        invalid = await client.get("/me", headers=bearer(user + "x"))
        ok = await client.get("/me", headers=bearer(user))
        forbidden = await client.get("/admin", headers=bearer(user))
        allowed = await client.get("/admin", headers=bearer(admin))

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == PROBLEM_JSON
    assert missing.json()["detail"] == "missing bearer token"
    assert missing.json()["type"].endswith("/unauthorized")
    assert basic.status_code == 401 and basic.json()["detail"] == "missing bearer token"
    assert invalid.status_code == 401 and invalid.json()["detail"] == "invalid token"
    assert invalid.headers["www-authenticate"] == "Bearer"
    assert user + "x" not in invalid.text
    assert ok.status_code == 200 and ok.json() == {"user_id": str(user_id)}
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == PROBLEM_JSON
    assert forbidden.json()["detail"] == "admin role required"
    assert allowed.status_code == 200

    openapi = app.openapi()
    assert openapi["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in ("/me", "/admin"):
        assert openapi["paths"][path]["get"]["security"] == [{"HTTPBearer": []}]


async def test_fastapi_dependency_maps_a_jwks_outage_to_503():
    url = f"http://127.0.0.1:{free_port()}{JWKS_PATH}"
    async with JWTVerifier(url, ISSUER, AUDIENCE) as verifier:
        app = protected_app(verifier)
        token = SigningKey().sign(make_claims(uuid.uuid4()))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/me", headers=bearer(token))
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["detail"] == "cannot verify tokens right now"

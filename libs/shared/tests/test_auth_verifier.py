"""The shared JWT verifier against a JWKS served over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from agentmesh.shared.auth import AdminPrincipal, CurrentPrincipal, JWTVerifier
from agentmesh.shared.errors import ServiceUnavailable, Unauthorized, install_error_handlers
from agentmesh.shared.testing.fixtures import serve_app
from agentmesh.shared.testing.jwt_keys import SigningKey, make_claims

ISSUER, AUDIENCE = "agentmesh-identity", "agentmesh"


class JwksServer:
    """A JWKS endpoint whose keys the test changes, counting requests."""

    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.requests = 0
        self.app = FastAPI()

        @self.app.get("/.well-known/jwks.json")
        async def jwks(request: Request) -> JSONResponse:
            self.requests += 1
            return JSONResponse({"keys": [k.public_jwk() for k in self.keys]})


@pytest.fixture
async def jwks():
    server = JwksServer()
    server.keys.append(SigningKey())
    async with serve_app(server.app) as base_url:
        server.url = f"{base_url}/.well-known/jwks.json"
        yield server


@pytest.fixture
async def verifier(jwks):
    v = JWTVerifier(jwks.url, ISSUER, AUDIENCE, refetch_min_interval=30)
    yield v
    await v.aclose()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_good_token_gives_a_principal(jwks, verifier):
    user_id = uuid.uuid4()
    token = jwks.keys[0].sign(
        make_claims(user_id, roles=("admin", "user"), scopes=("chat",), akid="k1")
    )
    principal = await verifier.verify(token)
    assert principal.user_id == user_id
    assert principal.is_admin and principal.has_scope("chat") and not principal.has_scope("x")
    assert principal.api_key_id == "k1"
    assert token not in repr(principal)
    await verifier.verify(token)
    assert jwks.requests == 1  # keys are cached


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"exp": 1_000_000}, "token expired"),
        ({"aud": "someone-else"}, "invalid token"),
        ({"iss": "evil-issuer"}, "invalid token"),
        ({"sub": "not-a-uuid"}, "invalid token"),
    ],
)
async def test_bad_claims_are_rejected(jwks, verifier, change, detail):
    token = jwks.keys[0].sign({**make_claims(uuid.uuid4()), **change})
    with pytest.raises(Unauthorized) as error:
        await verifier.verify(token)
    assert error.value.detail == detail


async def test_missing_exp_is_rejected(jwks, verifier):
    claims = make_claims(uuid.uuid4())
    del claims["exp"]
    with pytest.raises(Unauthorized):
        await verifier.verify(jwks.keys[0].sign(claims))


async def test_alg_none_is_rejected(jwks, verifier):
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": jwks.keys[0].kid}).encode())
    payload = b64(json.dumps(make_claims(uuid.uuid4())).encode())
    with pytest.raises(Unauthorized):
        await verifier.verify(f"{header}.{payload}.")


@pytest.mark.parametrize("secret", ["raw", "pem", "jwk-x"])
async def test_hs256_signed_with_the_public_key_is_rejected(jwks, verifier, secret):
    key = jwks.keys[0]
    material = {
        "raw": key.public_raw,
        "pem": key.public_pem,
        "jwk-x": key.public_jwk()["x"].encode(),
    }[secret]
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = b64(json.dumps(make_claims(uuid.uuid4())).encode())
    signature = b64(hmac.new(material, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    with pytest.raises(Unauthorized):
        await verifier.verify(f"{header}.{payload}.{signature}")


async def test_tampered_payload_is_rejected(jwks, verifier):
    token = jwks.keys[0].sign(make_claims(uuid.uuid4(), roles=("user",)))
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(Unauthorized):
        await verifier.verify(forged)


async def test_unknown_kid_after_rotation_is_fetched_once(jwks, verifier):
    await verifier.verify(jwks.keys[0].sign(make_claims(uuid.uuid4())))
    assert jwks.requests == 1
    rotated = SigningKey()
    jwks.keys.append(rotated)
    fresh = JWTVerifier(jwks.url, ISSUER, AUDIENCE, refetch_min_interval=0)
    try:
        await fresh.verify(jwks.keys[0].sign(make_claims(uuid.uuid4())))
        principal = await fresh.verify(rotated.sign(make_claims(uuid.uuid4())))
        assert principal.user_id
    finally:
        await fresh.aclose()


async def test_unknown_kid_refetch_is_rate_limited(jwks, verifier):
    await verifier.verify(jwks.keys[0].sign(make_claims(uuid.uuid4())))
    stranger = SigningKey()
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await verifier.verify(stranger.sign(make_claims(uuid.uuid4())))
    # One fetch at start; the unknown kids within the interval caused no more.
    assert jwks.requests == 1


async def test_rotated_key_is_found_by_a_refetch_after_the_interval(jwks):
    verifier = JWTVerifier(jwks.url, ISSUER, AUDIENCE, refetch_min_interval=0)
    try:
        await verifier.verify(jwks.keys[0].sign(make_claims(uuid.uuid4())))
        rotated = SigningKey()
        jwks.keys = [rotated]
        await verifier.verify(rotated.sign(make_claims(uuid.uuid4())))
        assert jwks.requests == 2
    finally:
        await verifier.aclose()


async def test_jwks_unreachable_is_503():
    verifier = JWTVerifier("http://127.0.0.1:1/.well-known/jwks.json", ISSUER, AUDIENCE)
    try:
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(SigningKey().sign(make_claims(uuid.uuid4())))
    finally:
        await verifier.aclose()


async def test_fastapi_dependencies(jwks, verifier):
    app = FastAPI()
    install_error_handlers(app)
    app.state.verifier = verifier

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict:
        return {"user_id": str(principal.user_id)}

    @app.get("/admin")
    async def admin(principal: AdminPrincipal) -> dict:
        return {"ok": True}

    user = jwks.keys[0].sign(make_claims(uuid.uuid4()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        missing = await client.get("/me")
        ok = await client.get("/me", headers={"Authorization": f"Bearer {user}"})
        forbidden = await client.get("/admin", headers={"Authorization": f"Bearer {user}"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == "application/problem+json"
    assert ok.status_code == 200
    assert forbidden.status_code == 403
    assert "bearer" in json.dumps(app.openapi()["components"]["securitySchemes"]).lower()

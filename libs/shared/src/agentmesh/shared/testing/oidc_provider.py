"""A real OpenID Connect provider for tests: ``oidc-provider-mock`` in a subprocess.

``await provider.set_user(sub, email=..., email_verified=True)`` sets a user's claims
(``PUT /users/<sub>``); ``await provider.sign_in(authorize_url, sub)`` posts the provider's
sign-in form as a browser would and returns the callback URL it redirects to.

``ResigningProvider`` stands in front of one and re-signs every ID token with a key of
its own under the provider's ``kid``: a token that is not signed by the provider's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentmesh.shared.local.ports import free_port


class MockProvider:
    def __init__(self, url: str) -> None:
        self.url = url
        self.issuer = url

    async def set_user(self, sub: str, **claims: Any) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.put(f"{self.url}/users/{sub}", json=claims)
            response.raise_for_status()

    async def sign_in(self, authorize_url: str, sub: str) -> str:
        """Post the sign-in form at ``authorize_url``; the ``Location`` it answers with."""
        async with httpx.AsyncClient() as client:
            response = await client.post(authorize_url, data={"sub": sub})
        assert response.status_code == 302, response.text
        return response.headers["location"]


@contextlib.asynccontextmanager
async def mock_provider() -> AsyncIterator[MockProvider]:
    """``python -m oidc_provider_mock -p PORT`` on loopback, until it answers."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "oidc_provider_mock",
        "-p",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                if process.returncode is not None:
                    raise RuntimeError("oidc-provider-mock exited during start-up")
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get(f"{url}/.well-known/openid-configuration")
                    if answer.status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("oidc-provider-mock did not start")
        yield MockProvider(url)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def resigning_app(upstream: str, *, mode: str = "other-key", secret: str = "") -> Starlette:
    """Passes every request on to ``upstream`` (keeping the ``Host``, so the provider's
    URLs and issuer name this app), and re-signs the ID tokens the token endpoint returns:
    ``other-key`` with another RSA key (under the original ``kid``, if it has one);
    ``hs256`` with HMAC keyed by the client ``secret`` (algorithm confusion); ``none``
    unsigned."""
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def resign(claims: dict[str, Any], header: dict[str, Any]) -> str:
        kid = {"kid": header["kid"]} if "kid" in header else None
        if mode == "hs256":
            return jwt.encode(claims, secret, algorithm="HS256", headers=kid)
        if mode == "none":
            # PyJWT takes no key for "none"; its annotation does not say so.
            return jwt.encode(claims, None, algorithm="none", headers=kid)  # type: ignore[arg-type]
        return jwt.encode(claims, other_key, algorithm=header["alg"], headers=kid)

    async def relay(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with httpx.AsyncClient() as client:
            answer = await client.request(
                request.method,
                upstream + request.url.path,
                params=request.query_params,
                headers=headers,
                content=await request.body(),
            )
        body = answer.content
        if request.url.path == "/oauth2/token" and answer.status_code == 200:
            tokens = answer.json()
            header = jwt.get_unverified_header(tokens["id_token"])
            claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
            tokens["id_token"] = resign(claims, header)
            body = httpx.Response(200, json=tokens).content
        kept = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
        }
        return Response(body, status_code=answer.status_code, headers=kept)

    methods = ["GET", "POST", "PUT"]
    return Starlette(routes=[Route("/{path:path}", relay, methods=methods)])

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from agentmesh.gateway.app import create_app as create_gateway
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.errors import ServiceUnavailable, install_error_handlers, problem_type
from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    serve_app,
)

INTERNAL_TOKEN = TEST_INTERNAL_TOKEN
PASSWORD = "correct horse battery staple"


class StandIn:
    """An upstream standing in for agents and chat: echoes, streams, stalls."""

    def __init__(self) -> None:
        self.sent_at: list[float] = []
        self.disconnected = asyncio.Event()
        self.app = FastAPI()
        install_error_handlers(self.app)

        @self.app.get("/health/ready")
        async def ready() -> dict:
            return {"status": "ready"}

        @self.app.api_route("/api/v1/conversations/echo", methods=["GET", "POST"])
        async def echo(request: Request) -> JSONResponse:
            body = await request.body()
            return JSONResponse(
                {
                    "headers": dict(request.headers),
                    "size": len(body),
                    "client": request.client.host if request.client else None,
                }
            )

        @self.app.get("/api/v1/conversations/stream")
        async def stream() -> StreamingResponse:
            async def events():
                try:
                    for i in range(5):
                        self.sent_at.append(time.perf_counter())
                        yield f"id: {i}\nevent: message.delta\ndata: token-{i}\n\n".encode()
                        await asyncio.sleep(0.5)
                    yield b"event: done\ndata: {}\n\n"
                finally:
                    self.disconnected.set()

            return StreamingResponse(events(), media_type="text/event-stream")

        @self.app.get("/api/v1/conversations/slow")
        async def slow() -> dict:
            await asyncio.sleep(3)
            return {"late": True}

        @self.app.get("/api/v1/conversations/fail")
        async def fail() -> JSONResponse:
            return JSONResponse({"error": "boom"}, status_code=500)

        @self.app.get("/api/v1/conversations/cookies")
        async def cookies() -> Response:
            response = Response(b"{}", media_type="application/json")
            for header, value in (
                ("set-cookie", "a=1; Path=/; HttpOnly"),
                ("set-cookie", "b=2; Path=/"),
                ("link", '</p/2>; rel="next"'),
                ("link", '</p/9>; rel="last"'),
            ):
                response.headers.append(header, value)
            return response

        @self.app.get("/api/v1/conversations/provider-down")
        async def provider_down() -> JSONResponse:
            """What chat answers when a user's model provider refuses connections."""
            body = {
                "type": problem_type("model-unreachable"),
                "status": 502,
                "title": "Model call failed",
            }
            return JSONResponse(body, status_code=502, media_type="application/problem+json")

        # Not in the stand-in's OpenAPI: a path parameter would add FastAPI's own 422
        # schema to the merged document.
        @self.app.post("/api/v1/conversations/{conversation_id}/messages", include_in_schema=False)
        async def outage(conversation_id: str) -> JSONResponse:
            """A service's own 503 (its database is down), marked as its own."""
            raise ServiceUnavailable("database down")


@pytest.fixture
async def platform(common_settings):
    """Identity (real) and a stand-in upstream over HTTP; the gateway in front of them.

    ``agents`` points at a closed port, to show what a refused upstream looks like."""
    standin = StandIn()
    async with AsyncExitStack() as stack:
        identity_app = create_identity(
            IdentitySettings(
                common=common_settings,
                key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
                internal_token=INTERNAL_TOKEN,
            )
        )
        identity_url = await stack.enter_async_context(serve_app(identity_app))
        chat_url = await stack.enter_async_context(serve_app(standin.app))
        settings = GatewaySettings(
            common=common_settings,
            identity_url=identity_url,
            agents_url=f"http://127.0.0.1:{free_port()}",
            chat_url=chat_url,
            internal_token=INTERNAL_TOKEN,
            breaker_failures=3,
            breaker_open_seconds=30,
            groups={
                "auth": {"rate_limit": {"rate": 50, "burst": 100}},
                "identity": {"rate_limit": {"rate": 50, "burst": 100}},
                "agents": {"connect_timeout": 0.5, "rate_limit": {"rate": 50, "burst": 100}},
                "chat": {
                    "read_timeout": 1.5,
                    "max_body_bytes": 1024,
                    "rate_limit": {"rate": 50, "burst": 100},
                },
                # Refills so slowly that even a very slow CI run can't refill mid-test.
                "chat_runs": {"rate_limit": {"rate": 0.001, "burst": 2}},
            },
            auth_failure_limit={"rate": 0.001, "burst": 20},
            cors_origins=["https://app.example.com"],
            trusted_proxies=["10.9.9.9", "10.44.0.0/16"],
            limits_scope=uuid.uuid4().hex,  # limits shared with no other test's gateway
        )
        gateway = create_gateway(settings)
        gateway_url = await stack.enter_async_context(serve_app(gateway))
        client = await stack.enter_async_context(app_client(gateway))
        client.app = gateway
        client.standin = standin
        client.url = gateway_url
        yield client


@pytest.fixture
def account(platform):
    """Register and log in through the gateway; returns (email, access token)."""

    async def make() -> tuple[str, str]:
        email = f"gw-{uuid.uuid4().hex[:10]}@example.com"
        body = {"email": email, "password": PASSWORD, "name": "Gateway User"}
        assert (await platform.post("/api/v1/auth/register", json=body)).status_code == 201
        tokens = await platform.post("/api/v1/auth/login", json=body)
        assert tokens.status_code == 200, tokens.text
        return email, tokens.json()["access_token"]

    return make

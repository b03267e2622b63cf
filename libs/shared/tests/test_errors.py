"""Every error is problem+json with a stable type and the request id, and leaks nothing."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from agentmesh.shared.errors import AppError, NotFound, install_error_handlers
from agentmesh.shared.middleware import RequestIdMiddleware

SECRET_TEXT = "db password is hunter2"


class AgentNotFound(NotFound):
    type = "agent-not-found"
    title = "Agent not found"


class Item(BaseModel):
    name: str = Field(min_length=1)
    count: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)

    @app.get("/agents/{agent_id}")
    async def get_agent(agent_id: str) -> dict:
        raise AgentNotFound(f"No agent {agent_id}")

    @app.post("/items")
    async def create_item(item: Item) -> Item:
        return item

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError(SECRET_TEXT)

    @app.get("/teapot")
    async def teapot() -> dict:
        raise AppError("short and stout", status=418, type="teapot", title="I'm a teapot")

    return app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"https://agentmesh.dev/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_unknown_route_is_404_problem(client):
    body = assert_problem(await client.get("/nope"), 404, "not-found")
    assert body["instance"] == "/nope"


async def test_wrong_method_is_405_problem(client):
    response = await client.delete("/items")
    assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["allow"]


async def test_validation_error_is_422_problem_naming_fields(client):
    response = await client.post("/items", json={"name": "", "count": "many"})
    body = assert_problem(response, 422, "validation-error")
    locations = {tuple(e["loc"]) for e in body["errors"]}
    assert ("body", "name") in locations
    assert ("body", "count") in locations


async def test_malformed_json_is_422_not_500(client):
    response = await client.post(
        "/items", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "validation-error")


async def test_domain_error_keeps_its_type_and_detail(client):
    body = assert_problem(await client.get("/agents/a1"), 404, "agent-not-found")
    assert body["detail"] == "No agent a1"
    assert body["title"] == "Agent not found"
    assert_problem(await client.get("/teapot"), 418, "teapot")


async def test_unhandled_error_is_500_without_exception_text(client, caplog):
    response = await client.get("/boom", headers={"X-Request-ID": "trace-me-1"})
    body = assert_problem(response, 500, "internal-error")
    assert body["request_id"] == "trace-me-1"
    assert SECRET_TEXT not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    # The operator still gets the cause, tied to the request id.
    assert any(SECRET_TEXT in (r.exc_text or str(r.exc_info)) for r in caplog.records)


async def test_request_id_is_kept_or_generated(client):
    kept = await client.get("/nope", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    generated = await client.get("/nope")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await client.get("/nope", headers={"X-Request-ID": "bad id\twith spaces" * 20})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces" * 20


async def test_only_a_services_own_outage_is_marked_for_the_gateway():
    """The gateway's breaker counts 503s marked as the service's own (its database, its
    JWKS); a user's failing dependency (502, or a provider's 429 as 503) is not marked."""
    from sqlalchemy.exc import OperationalError

    from agentmesh.shared.errors import UPSTREAM_HEALTH_HEADER, ServiceUnavailable

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/jwks-down")
    async def jwks_down() -> dict:
        raise ServiceUnavailable("cannot fetch the JWKS")

    @app.get("/database-down")
    async def database_down() -> dict:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    @app.get("/provider-down")
    async def provider_down() -> dict:
        raise AppError("The model provider refused.", status=502, type="model-unreachable")

    @app.get("/provider-rate-limited")
    async def provider_rate_limited() -> dict:
        raise AppError("Slow down.", status=503, type="model-rate-limited")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/jwks-down", "/database-down"):
            response = await client.get(path)
            assert response.status_code == 503
            assert response.headers[UPSTREAM_HEALTH_HEADER] == "unavailable"
        for path, status in (("/provider-down", 502), ("/provider-rate-limited", 503)):
            response = await client.get(path)
            assert response.status_code == status
            assert UPSTREAM_HEALTH_HEADER not in response.headers

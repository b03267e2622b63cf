"""A service's OpenAPI documents its errors as they are answered: problem+json.

The gateway fuzz run (``tests/fuzz``) found every 422 documented as FastAPI's
``application/json`` ``HTTPValidationError`` while it is answered as problem+json, and
401s and unreadable-body 400s not documented at all."""

from __future__ import annotations

import httpx
from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from agentmesh.shared.errors import PROBLEM_JSON, install_error_handlers
from agentmesh.shared.openapi import PROBLEM_REF, PROBLEM_SCHEMAS, install_problem_docs

OWN_ERROR = {"application/json": {"schema": {"type": "object"}}}


class Item(BaseModel):
    name: str = Field(min_length=1)


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_problem_docs(app)
    bearer = HTTPBearer(auto_error=False)

    @app.post("/items", status_code=201, responses={409: {"description": "Exists"}})
    async def create_item(item: Item) -> Item:
        return item

    @app.get("/items/{item_id}", dependencies=[Depends(bearer)])
    async def get_item(item_id: int) -> Item:
        return Item(name=str(item_id))

    @app.get("/openai", responses={"default": {"description": "Own", "content": OWN_ERROR}})
    async def openai_shaped() -> dict:
        return {}

    return app


def problem_of(response: dict) -> str:
    assert set(response["content"]) == {PROBLEM_JSON}, response
    return response["content"][PROBLEM_JSON]["schema"]["$ref"]


def test_errors_are_documented_as_problem_json():
    document = make_app().openapi()
    create = document["paths"]["/items"]["post"]["responses"]
    assert problem_of(create["422"]) == PROBLEM_REF
    assert problem_of(create["409"]) == PROBLEM_REF
    assert problem_of(create["400"]) == PROBLEM_REF  # a body that can't be read
    read = document["paths"]["/items/{item_id}"]["get"]["responses"]
    assert problem_of(read["401"]) == PROBLEM_REF and problem_of(read["422"]) == PROBLEM_REF
    assert "400" not in read  # no body
    own = document["paths"]["/openai"]["get"]["responses"]
    assert own["default"]["content"] == OWN_ERROR and set(own) == {"200", "default"}
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["Problem"] == PROBLEM_SCHEMAS["Problem"]


async def test_a_validation_error_matches_the_documented_problem():
    app = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/items", json={"name": ""})
        unreadable = await client.post(
            "/items", content=b"\x80", headers={"content-type": "application/json"}
        )
    schema = PROBLEM_SCHEMAS["Problem"]
    for answer, status in ((response, 422), (unreadable, 400)):
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == PROBLEM_JSON
        body = answer.json()
        assert set(schema["required"]) <= set(body) <= set(schema["properties"])
    field_error = PROBLEM_SCHEMAS["ProblemFieldError"]
    for error in response.json()["errors"]:
        assert set(error) == set(field_error["required"])

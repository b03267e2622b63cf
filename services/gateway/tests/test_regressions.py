"""Failures the schemathesis fuzz run (``tests/fuzz``) found in the merged OpenAPI."""

from __future__ import annotations

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


async def test_merged_openapi_documents_the_errors_the_gateway_answers(platform):
    """The gateway answers 401 (credentials), 429 (rate limits) and 413 (body size) before
    a service sees the request; none of them was documented."""
    document = (await platform.get("/openapi.json")).json()
    paths = document["paths"]
    me = paths["/api/v1/users/me"]["get"]["responses"]
    assert me["401"]["content"] == PROBLEM and me["429"]["content"] == PROBLEM
    assert "413" not in me  # no body
    register = paths["/api/v1/auth/register"]["post"]["responses"]
    assert "401" not in register  # public
    assert register["429"]["content"] == PROBLEM and register["413"]["content"] == PROBLEM
    assert register["422"]["content"] == PROBLEM  # not FastAPI's HTTPValidationError
    schemas = document["components"]["schemas"]
    assert "Problem" in schemas and "HTTPValidationError" not in schemas

    # What the gateway answers for a bad token is what the merged document says.
    missing = await platform.get("/api/v1/users/me", headers={"Authorization": "Bearer x"})
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    required = schemas["Problem"]["required"]
    assert set(required) <= set(missing.json())

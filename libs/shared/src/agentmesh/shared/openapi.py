"""Document errors as they are answered: ``application/problem+json`` (see ``errors``).

FastAPI documents a 422 as ``application/json`` ``HTTPValidationError`` and other error
responses with no body at all, while every error leaves as problem details. ``document
_problems`` rewrites a service's OpenAPI to say so; the gateway's merged document reuses
``PROBLEM_SCHEMAS`` and ``problem_response`` for the errors it answers itself.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from agentmesh.shared.errors import PROBLEM_JSON

PROBLEM_REF = "#/components/schemas/Problem"
PROBLEM_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "title": "Problem",
        "description": "An error, as RFC 9457 problem details.",
        "type": "object",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "description": "A URI naming the kind of problem"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string", "description": "The request's path"},
            "request_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "errors": {
                "type": "array",
                "description": "What is invalid in the request (request validation)",
                "items": {"$ref": "#/components/schemas/ProblemFieldError"},
            },
        },
    },
    "ProblemFieldError": {
        "title": "ProblemFieldError",
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {"type": "array", "items": {"type": "string"}},
            "msg": {"type": "string"},
            "type": {"type": "string"},
        },
    },
}
_FASTAPI_VALIDATION = {
    "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
}
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


#: One event of a ``text/event-stream`` response. OpenAPI 3.1 has a media type's
#: ``schema`` describe each event of a stream; this is the shape OpenAPI 3.2 gives one.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "title": "ServerSentEvent",
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "The event's name"},
        "data": {"type": "string", "description": "Its payload (JSON text)"},
        "id": {"type": "string", "description": "Resume after it with Last-Event-ID"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def sse_content() -> dict[str, Any]:
    """The ``content`` of a response streamed as Server-Sent Events."""
    return {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}


def problem_content() -> dict[str, Any]:
    """The ``content`` of an OpenAPI response whose body is problem details."""
    return {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}


def problem_response(description: str) -> dict[str, Any]:
    """An OpenAPI response whose body is problem details."""
    return {"description": description, "content": problem_content()}


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``document`` (in place) so its error responses are problem+json.

    Every 4xx/5xx response without a body of its own (or with FastAPI's validation
    error) gets the ``Problem`` schema. An operation also gets the 401 of its security
    scheme, and with a body the 400 an unreadable body is answered with. Responses a
    route documents itself (e.g. in OpenAI's error shape) are left alone."""
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if "default" not in responses:
                if operation.get("security"):
                    responses.setdefault("401", {"description": "Missing or invalid credentials"})
                if "requestBody" in operation:
                    responses.setdefault("400", {"description": "The body could not be read"})
            for code, response in responses.items():
                if str(code)[:1] not in ("4", "5"):
                    continue
                content = response.get("content")
                if not content or content == _FASTAPI_VALIDATION:
                    response["content"] = problem_content()
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(PROBLEM_SCHEMAS)
    for name in _FASTAPI_SCHEMAS:  # in order: the first refers to the second
        if f'"#/components/schemas/{name}"' not in json.dumps(document):
            schemas.pop(name, None)
    return document


def install_problem_docs(app: FastAPI) -> None:
    """Make ``app.openapi()`` document its errors as problem+json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""OpenAI's error body, ``{"error": {"message", "type", "param", "code"}}``: what OpenAI
clients parse on ``/v1/*``. Used by chat's OpenAI-compatible routes and by the gateway
for the errors it answers itself on those paths."""

from __future__ import annotations

from typing import Any

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {"unauthorized": "invalid_api_key", "rate-limited": "rate_limit_exceeded"}


def openai_error(
    status: int, message: str, *, slug: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error body for an HTTP status and a problem slug."""
    kind = _TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    code = "invalid_api_key" if status == 401 else _CODES.get(slug or "", slug)
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code.replace("-", "_") if code else None,
        }
    }


def from_problem(status: int, problem: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A problem-details body as (status, OpenAI error body). Request validation (422)
    becomes a 400 ``invalid_request_error``, as OpenAI answers a malformed request."""
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1] or None
    message = str(problem.get("detail") or problem.get("title") or "Error")
    param = problem.get("param")
    errors = problem.get("errors")
    if status == 422 and isinstance(errors, list) and errors:
        first = errors[0]
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        status, slug = 400, None
    elif status == 422:
        status = 400
    return status, openai_error(status, message, slug=slug, param=param)

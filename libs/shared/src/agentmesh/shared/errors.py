"""Errors as RFC 9457 problem details (``application/problem+json``).

Raise an ``AppError`` subclass from domain code; the handlers installed by
``install_error_handlers`` render it, and render framework errors (404, 405, 422) and
unhandled exceptions the same way. A 500 never carries exception text.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentmesh.shared.context import REQUEST_ID_HEADER, current_request_id

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://agentmesh.dev/problems/"
#: Set (to ``unavailable``) on a 503 that is the service's own: its database, its JWKS,
#: itself. The gateway's circuit breaker counts only these answers (besides refused or
#: reset connections and timeouts); a failure of a user's model provider, MCP server or
#: embedding endpoint is a 502 with its own type and never carries it.
UPSTREAM_HEALTH_HEADER = "X-AgentMesh-Upstream-Health"
UPSTREAM_UNAVAILABLE = "unavailable"

logger = logging.getLogger("agentmesh.errors")


def problem_type(slug: str) -> str:
    """The stable ``type`` URI for a problem slug."""
    return PROBLEM_BASE + slug


class AppError(Exception):
    """Base of every error a client may see. Subclass per domain, e.g. ``AgentNotFound``."""

    status: int = 500
    type: str = "internal-error"
    title: str = "Internal Server Error"
    #: The service itself cannot serve (not a user's dependency): marked for the gateway.
    own_outage: bool = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        status: int | None = None,
        type: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title or self.title)
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if title is not None:
            self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


class NotFound(AppError):
    status, type, title = 404, "not-found", "Not Found"


class Conflict(AppError):
    status, type, title = 409, "conflict", "Conflict"


class Unauthorized(AppError):
    status, type, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        headers = kwargs.pop("headers", None) or {"WWW-Authenticate": "Bearer"}
        super().__init__(detail, headers=headers, **kwargs)


class Forbidden(AppError):
    status, type, title = 403, "forbidden", "Forbidden"


class ServiceUnavailable(AppError):
    status, type, title = 503, "service-unavailable", "Service Unavailable"
    own_outage = True


_STATUS_SLUGS = {
    400: ("bad-request", "Bad Request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    406: ("not-acceptable", "Not Acceptable"),
    409: ("conflict", "Conflict"),
    412: ("precondition-failed", "Precondition Failed"),
    413: ("payload-too-large", "Payload Too Large"),
    415: ("unsupported-media-type", "Unsupported Media Type"),
    422: ("validation-error", "Unprocessable Content"),
    429: ("rate-limited", "Too Many Requests"),
    500: ("internal-error", "Internal Server Error"),
    502: ("bad-gateway", "Bad Gateway"),
    503: ("service-unavailable", "Service Unavailable"),
    504: ("gateway-timeout", "Gateway Timeout"),
}


def problem_response(
    request: Request | None,
    *,
    status: int,
    slug: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """Render one problem+json response carrying the request id."""
    default_slug, default_title = _STATUS_SLUGS.get(status, ("error", "Error"))
    request_id = _request_id(request)
    body: dict[str, Any] = {
        "type": problem_type(slug or default_slug),
        "title": title or default_title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    body["request_id"] = request_id
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    out_headers = dict(headers or {})
    if request_id:
        out_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(body, status_code=status, headers=out_headers, media_type=PROBLEM_JSON)


def _request_id(request: Request | None) -> str | None:
    if request is not None:
        rid = getattr(request.state, "request_id", None)
        if rid:
            return str(rid)
    return current_request_id()


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    headers = dict(exc.headers)
    if exc.own_outage:
        headers[UPSTREAM_HEALTH_HEADER] = UPSTREAM_UNAVAILABLE
    return problem_response(
        request,
        status=exc.status,
        slug=exc.type,
        title=exc.title,
        detail=exc.detail,
        headers=headers,
        extra=exc.extra,
    )


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No resource at {request.method} {request.url.path}"
    if exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(
        request, status=exc.status_code, detail=detail, headers=dict(exc.headers or {})
    )


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        item = {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        out.append(item)
    return out


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _jsonable_errors(exc.errors())
    fields = ", ".join(".".join(e["loc"]) for e in errors[:5])
    return problem_response(
        request,
        status=422,
        detail=f"The request is not valid: {fields}" if fields else "The request is not valid",
        extra={"errors": errors},
    )


async def _database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Postgres "data exception" errors (SQLSTATE class 22: a NUL byte in text, a number
    out of range, ...) come from what the client sent: a 422, not a 500."""
    orig = getattr(exc, "orig", None)
    sqlstate = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    if sqlstate.startswith("22"):
        logger.info("rejected data", extra={"sqlstate": sqlstate, "path": request.url.path})
        return problem_response(
            request,
            status=422,
            slug="invalid-data",
            title="Invalid data",
            detail="A value in the request cannot be stored (for example a NUL character "
            "in text, or a number out of range).",
        )
    if isinstance(exc, OperationalError | InterfaceError) or sqlstate.startswith(("08", "57P")):
        logger.error("database unavailable", extra={"path": request.url.path})
        return problem_response(
            request,
            status=503,
            detail="The database is unavailable right now; try again shortly.",
            headers={"Retry-After": "2", UPSTREAM_HEALTH_HEADER: UPSTREAM_UNAVAILABLE},
        )
    return await _unhandled_error_handler(request, exc)


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log (with the request id), never to the client.
    logger.error(
        "unhandled error",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"path": request.url.path},
    )
    return problem_response(
        request,
        status=500,
        detail="An unexpected error occurred. Quote the request id when reporting it.",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as problem+json."""
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(DBAPIError, _database_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)

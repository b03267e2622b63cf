"""OpenAI's error shape on ``/v1/*``, and problem+json everywhere else.

Errors of these routes are raised and rendered as everywhere in the service (so the
request's session still rolls back, and the app's handlers still decide status and
text); ``OpenAIRoute`` then rewrites the problem+json body on its way out into
``{"error": {"message", "type", "param", "code"}}``, the shape OpenAI clients parse.
"""

from __future__ import annotations

import json

from fastapi.routing import APIRoute
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentmesh.shared.errors import PROBLEM_JSON
from agentmesh.shared.openai_errors import from_problem, openai_error

__all__ = ["OpenAIRoute", "from_problem", "openai_error", "openai_errors"]


def openai_errors(app: ASGIApp) -> ASGIApp:
    """Wrap a route's ASGI app so its problem+json responses leave in OpenAI's shape."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        held: Message | None = None
        body = bytearray()
        started = False

        async def rewrite(message: Message) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                if headers.get("content-type", "").startswith(PROBLEM_JSON):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body"):
                    return
                try:
                    problem = json.loads(body)
                except ValueError:
                    problem = {}
                status, error = from_problem(held["status"], problem)
                content = json.dumps(error).encode()
                headers = MutableHeaders(raw=list(held.get("headers", [])))
                headers["content-type"] = "application/json"
                headers["content-length"] = str(len(content))
                started = True
                await send({**held, "status": status, "headers": headers.raw})
                await send({"type": "http.response.body", "body": content})
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, rewrite)
        except HTTPException as exc:
            # The route's own refusal (a method it doesn't serve: 405), raised before any
            # handler could render it.
            if started:
                raise
            message = str(exc.detail)
            if exc.status_code == 405:
                message = f"{scope['method']} is not allowed on {scope['path']}"
            content = json.dumps(openai_error(exc.status_code, message)).encode()
            headers = MutableHeaders(headers=exc.headers or {})
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(content))
            await send(
                {"type": "http.response.start", "status": exc.status_code, "headers": headers.raw}
            )
            await send({"type": "http.response.body", "body": content})
        except Exception:
            if not started:  # the app's last-resort handler would answer problem+json
                content = json.dumps(
                    openai_error(
                        500,
                        "An unexpected error occurred. Quote the request id when reporting it.",
                        slug="internal-error",
                    )
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(content)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": content})
            raise

    return wrapped


class OpenAIRoute(APIRoute):
    """A route whose errors are rendered in OpenAI's shape."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await openai_errors(super().handle)(scope, receive, send)

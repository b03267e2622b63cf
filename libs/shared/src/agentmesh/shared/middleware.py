"""ASGI middleware every service uses."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentmesh.shared.context import REQUEST_ID_HEADER, accept_request_id, request_id_var

_HEADER = REQUEST_ID_HEADER.lower().encode()


class RequestIdMiddleware:
    """Keeps a sane ``X-Request-ID`` or makes one, exposes it to handlers and logs, and
    echoes it on the response. Pure ASGI, so streaming responses are not buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == _HEADER), None)
        request_id = accept_request_id(incoming.decode("latin-1") if incoming else None)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != _HEADER]
                headers.append((_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)

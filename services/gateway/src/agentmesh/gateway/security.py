"""Security headers on every gateway response (pure ASGI: streams stay unbuffered)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentmesh.gateway.addresses import TrustedProxies


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts_seconds: int, trusted_proxies: TrustedProxies) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_seconds}; includeSubDomains".encode()
        self.trusted = trusted_proxies

    def _over_tls(self, scope: Scope) -> bool:
        if scope.get("scheme") == "https":
            return True
        client = scope.get("client")
        if client and client[0] in self.trusted:
            for key, value in scope["headers"]:
                if key == b"x-forwarded-proto":
                    return value.split(b",")[0].strip() == b"https"
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = self._over_tls(scope)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if tls:
                    extra.append((b"strict-transport-security", self.hsts))
                headers += [(k, v) for k, v in extra if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)

"""The API reference pages: Scalar at ``/docs``, Swagger UI at ``/docs/swagger``.

Their assets are served by the gateway (``static/docs``, fetched by
``scripts/vendor-docs-assets.sh``), never from a CDN, so the pages work offline, and each
page is sent with a Content-Security-Policy that allows only this origin and its own inline
script (by nonce).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from scalar_fastapi import get_scalar_api_reference

ASSETS = Path(__file__).with_name("static") / "docs"
PREFIX = "/docs/assets"
TITLE = "AgentMesh API"


def policy(nonce: str) -> str:
    """Only this origin; inline script only with the page's nonce. Styles may be inline:
    both UIs inject their own at run time."""
    return "; ".join(
        (
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def _locked(page: HTMLResponse) -> HTMLResponse:
    """``page`` with a nonce on its inline scripts and the policy that admits only them."""
    nonce = secrets.token_urlsafe(16)
    html = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": policy(nonce),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def register(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def scalar() -> HTMLResponse:
        return _locked(
            get_scalar_api_reference(
                openapi_url=openapi_url,
                title=TITLE,
                scalar_js_url=f"{PREFIX}/scalar.js",
                scalar_favicon_url=f"{PREFIX}/favicon.png",
                with_default_fonts=False,
                telemetry=False,
            )
        )

    @app.get("/docs/swagger", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return _locked(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=TITLE,
                swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
                swagger_css_url=f"{PREFIX}/swagger-ui.css",
                swagger_favicon_url=f"{PREFIX}/favicon.png",
            )
        )

"""The API reference pages: Scalar at /docs, Swagger UI at /docs/swagger, with every asset
served by the gateway itself and a Content-Security-Policy that admits nothing else."""

from __future__ import annotations

import re

import pytest

PAGES = ("/docs", "/docs/swagger")


@pytest.mark.parametrize("page", PAGES)
async def test_reference_pages_load_only_our_own_assets_under_a_strict_policy(platform, page):
    response = await platform.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    nonce = re.fullmatch(r"'self' 'nonce-([\w-]+)'", directives["script-src"]).group(1)
    # Every inline script carries this response's nonce; no script or style from elsewhere.
    scripts = re.findall(r"<script([^>]*)>", response.text)
    inline = [attrs for attrs in scripts if "src=" not in attrs]
    assert inline and all(f'nonce="{nonce}"' in attrs for attrs in inline)
    sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    for source in sources:
        asset = await platform.get(source)
        assert asset.status_code == 200, source
        assert len(asset.content) > 0
    # A new nonce on every page load.
    again = await platform.get(page)
    assert again.headers["content-security-policy"] != csp


async def test_scalar_is_the_reference_and_swagger_is_kept_beside_it(platform):
    scalar = await platform.get("/docs")
    assert "Scalar.createApiReference" in scalar.text
    assert '"withDefaultFonts": false' in scalar.text  # no font CDN
    swagger = await platform.get("/docs/swagger")
    assert "SwaggerUIBundle" in swagger.text
    script = await platform.get("/docs/assets/scalar.js")
    assert script.headers["content-type"].split(";")[0] in (
        "application/javascript",
        "text/javascript",
    )
    assert (await platform.get("/docs/assets/nothing-here.js")).status_code == 404

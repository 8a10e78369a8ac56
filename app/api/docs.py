"""The interactive API docs (Swagger UI and ReDoc), served with assets from a package, no CDN."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

# fastapi-offline ships the swagger-ui and redoc dist files; only its static folder is used.
ASSETS_PACKAGE = ("fastapi_offline", "static")
ASSETS_URL = "/docs/assets"
OPENAPI_URL = "/openapi.json"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def _policy(html: str) -> str:
    """A CSP that lets the page reach the gateway only (the browser refuses anything else,
    such as ReDoc's logo from its CDN), allowing just the page's own inline script by hash.
    Both UIs style themselves inline, and ReDoc searches in a worker made from a blob."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ).replace("'self' ;", "'self';")


def install(app: FastAPI) -> None:
    """Serve /docs and /redoc, and their scripts and styles from the gateway itself."""
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    swagger = bytes(
        get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=None,
            # The key typed into Authorize stays in the page's memory, never in localStorage.
            swagger_ui_parameters={"persistAuthorization": False, "tryItOutEnabled": False},
        ).body
    ).decode()
    redoc = bytes(
        get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - API reference",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        ).body
    ).decode()
    pages = {
        page: (html, {"Content-Security-Policy": _policy(html), "X-Frame-Options": "DENY"})
        for page, html in (("swagger", swagger), ("redoc", redoc))
    }

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        html, headers = pages["swagger"]
        return HTMLResponse(html, headers=headers)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        html, headers = pages["redoc"]
        return HTMLResponse(html, headers=headers)

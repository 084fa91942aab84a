"""The API documentation pages, Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served offline.

FastAPI's own pages load their JavaScript and CSS from a CDN (and ReDoc its fonts from Google), so on
a machine without internet they stay blank. These serve the same pages with the assets the
``fastapi-offline`` package installs from PyPI with the project, mounted under ``/docs-assets``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS_PATH = "/docs-assets"
DOCS_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
"""swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png, as the package ships them."""
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
OFFLINE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)
"""Content-Security-Policy of the docs pages: the browser loads nothing from elsewhere (ReDoc's sidebar
links a logo on its makers' CDN)."""
HIDE_REDOC_BRANDING = "<style>a[href*='redocly.com'] { display: none; }</style></head>"


def _offline(page: HTMLResponse, *, extra_head: str = "") -> HTMLResponse:
    body = bytes(page.body).decode()
    if extra_head:
        body = body.replace("</head>", extra_head, 1)
    return HTMLResponse(body, headers={"Content-Security-Policy": OFFLINE_POLICY})


def mount_docs(app: FastAPI, *, openapi_url: str = "/openapi.json") -> None:
    """Serve ``/docs`` and ``/redoc`` on ``app`` from the local assets (build ``app`` with docs_url=None)."""
    router = APIRouter(include_in_schema=False, tags=["display"])
    title = app.title

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title}: docs",
            swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
            # No validator badge: it would call validator.swagger.io.
            swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
        )
        return _offline(page)

    @router.get(OAUTH2_REDIRECT_PATH)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title}: reference",
            redoc_js_url=f"{DOCS_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
        return _offline(page, extra_head=HIDE_REDOC_BRANDING)

    app.include_router(router)
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")

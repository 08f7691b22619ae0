"""``/docs`` (Swagger UI) and ``/redoc`` with their scripts served by this server, not a CDN.

FastAPI's own pages load swagger-ui and redoc from jsDelivr (and a favicon and fonts from elsewhere),
so they are blank on the offline hosts vidinfer is made for. The same pages here point at the copies
the ``fastapi-offline`` package ships, mounted at ``/static/docs`` (``static`` is a reserved workspace
name, so the mount shadows no workspace's path). A Content-Security-Policy keeps the pages on this
server: redoc's bundle still asks a CDN for its footer logo, which an offline host would leave hanging.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: where the assets are mounted
ASSETS_PATH = "/static/docs"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
TITLE = "vidinfer"
#: the pages and what they load reach this server only (the init scripts and styles are inline; redoc
#: runs its search in a worker made from a blob)
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png, from the package."""
    return StaticFiles(directory=str(files("fastapi_offline") / "static"))


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json", title=f"{TITLE} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )
    return _local_only(page)


@router.get(OAUTH2_REDIRECT)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return _local_only(get_redoc_html(openapi_url=f"{root}/openapi.json", title=f"{TITLE} - ReDoc",
                                      redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
                                      redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png", with_google_fonts=False))


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page

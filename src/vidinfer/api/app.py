"""The FastAPI application: parts built once from settings, routes, and one error handler."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidinfer import __version__
from vidinfer.api import routes_blobs, routes_compat, routes_search, routes_ui, routes_video
from vidinfer.api import routes_diff, routes_docs, routes_export, routes_render
from vidinfer.api.deps import Service
from vidinfer.api.ratelimit import RateLimiter
from vidinfer.api.schemas import error_responses
from vidinfer.config import Settings
from vidinfer.errors import RateLimited, Unavailable, VidinferError
from vidinfer.jobs.store import JobStore
from vidinfer.models.registry import ModelRegistry
from vidinfer.results_schema import results_schema
from vidinfer.storage import open_store

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def create_app(settings: Settings, store: JobStore | None = None,
               dispatch: Callable[[str], None] | None = None) -> FastAPI:
    """The API over the settings' job store and blob store (``settings.public_url`` must be set);
    ``dispatch`` hands new jobs to the distributed engine (None: the embedded pool polls the store)."""
    app = FastAPI(
        title="vidinfer", version=__version__,
        description="Video inference with a Roboflow-compatible API. Every call takes `?api_key=`. "
                    "Errors are `{\"error\": {\"code\", \"message\"}}`.",
        responses=error_responses(500, 503, 507),
        docs_url=None, redoc_url=None,  # served by routes_docs with local assets: FastAPI's load from a CDN
    )
    store = store or JobStore(settings.database)
    store.key_cache_ttl = settings.key_cache_ttl
    app.state.service = Service(
        settings=settings,
        store=store,
        blobs=open_store(settings),
        registry=ModelRegistry.from_settings(settings),
        status_limiter=RateLimiter(settings.status_rate_per_minute),
        dispatch=dispatch,
    )

    @app.exception_handler(VidinferError)
    async def vidinfer_error(_request: Request, exc: VidinferError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, (RateLimited, Unavailable)) else None
        status = exc.status_code  # 500 storage_error, 503 Unavailable, 507 StorageFull: each says what to do
        if status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return _error(status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(400, "invalid_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "internal_error", "an unexpected error occurred; see the server log")

    @app.get("/health", tags=["service"])
    def health() -> dict[str, object]:
        return {"ok": True, "version": __version__}

    @app.get("/results.schema.json", tags=["service"])
    def schema() -> dict[str, object]:
        """The JSON Schema of the results file behind ``output_signed_url``."""
        return results_schema()

    app.include_router(routes_ui.router)
    app.mount("/ui", routes_ui.static_files(), name="ui")
    app.include_router(routes_docs.router)
    app.mount(routes_docs.ASSETS_PATH, routes_docs.static_files(), name="docs-assets")
    app.include_router(routes_video.router)
    app.include_router(routes_search.router)
    app.include_router(routes_blobs.router)
    app.include_router(routes_export.router)  # GET /videoinfer/{job_id}/export: results in other formats
    app.include_router(routes_render.router)  # POST/GET /videoinfer/render: renders of finished jobs
    app.include_router(routes_diff.router)  # GET /videoinfer/diff: two finished jobs compared
    app.include_router(routes_compat.router)  # last: its /{workspace} paths would shadow the others

    def openapi() -> dict[str, object]:
        """FastAPI's spec, less the 422 ``HTTPValidationError`` it documents by default: validation
        errors are answered 400 with the error shape (``invalid_request``) by the handler above."""
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    answer = operation.get("responses", {}).get("422", {})
                    if "HTTPValidationError" in str(answer.get("content", "")):
                        del operation["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app

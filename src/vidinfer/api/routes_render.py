"""Rendering a finished job's predictions onto its video: queue it, then poll it (a worker does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from vidinfer.api.deps import CallerDep, Service, ServiceDep
from vidinfer.api.schemas import error_responses
from vidinfer.errors import InvalidInput
from vidinfer.jobs.renders import RenderStore, check_options

router = APIRouter(tags=["rendering"])
ERRORS = error_responses(400, 401, 404, 429)  # 429: the render status shares the status rate limit


class RenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blur: list[str] = Field(default_factory=list, max_length=100, examples=[["person", "face"]],
                            description="Classes whose boxes are blurred (face: the faces of gaze results).")
    start: float | None = Field(None, ge=0, description="Start of the range to render, in seconds.")
    end: float | None = Field(None, gt=0, description="End of the range to render, in seconds.")
    models: list[str] = Field(default_factory=list, max_length=16,
                              description="Results keys to draw (default: every model of the job).")


class RenderOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    job_id: str
    status: int = Field(description="0 done, 1 queued or running, 2 and up failed (as for jobs).")
    state: str
    progress: float
    frames_done: int
    frames_total: int | None
    rendered_signed_url: str | None = Field(None, description="The H.264 MP4, once status is 0.")


def _renders(request: Request, service: Service) -> RenderStore:
    """One per app (it creates the ``renders`` table on first use)."""
    renders = getattr(request.app.state, "renders", None)
    if renders is None:
        renders = request.app.state.renders = RenderStore(service.store, service.settings.max_attempts)
    return renders


def _body(service: Service, render) -> dict:  # noqa: ANN001
    ttl = service.settings.results_url_ttl
    return render.status_body(lambda key: service.blobs.sign_url("GET", key, ttl))


def _paths(path: str) -> list[str]:
    return [path, path + "/"]


def _route(method: str, path: str):  # noqa: ANN202 - the path with and without "/", as for the other calls
    def register(fn):  # noqa: ANN001, ANN202
        for p in _paths(path):
            router.add_api_route(p, fn, methods=[method], include_in_schema=not p.endswith("/"),
                                 responses=ERRORS, response_model=RenderOut)
        return fn

    return register


@_route("POST", "/videoinfer/render")
def request_render(request: Request, service: ServiceDep, caller: CallerDep, job_id: Annotated[str, Query(max_length=64)],
                   body: RenderIn | None = None) -> dict:
    """Queue a render of a finished job (its input video with its predictions drawn), run by a worker.

    Asking again while one is queued or running returns that one; once it is done or failed, asking
    again renders afresh with the new options."""
    if service.dispatch is not None:
        raise InvalidInput("rendering through the API needs the embedded worker pool (vidinfer serve without "
                           "VIDINFER_BROKER_URL); render with `vidinfer render` instead", code="render_unavailable")
    job = service.store.get(job_id, caller.workspace)  # another workspace's job: 404
    options = check_options((body or RenderIn()).model_dump(), (job.stats.get("video") or {}).get("duration"))
    return _body(service, _renders(request, service).request(job, options))


@_route("GET", "/videoinfer/render")
def render_status(request: Request, service: ServiceDep, caller: CallerDep, job_id: Annotated[str, Query(max_length=64)]) -> dict:
    """The render's state: ``status`` 0 done (with ``rendered_signed_url``), 1 running, 2+ failed."""
    service.status_limiter.check(caller.api_key)
    return _body(service, _renders(request, service).get(job_id, caller.workspace))

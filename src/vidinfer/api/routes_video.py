"""The video inference calls: upload URL, submit, status, cancel, list."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from vidinfer.api.deps import CallerDep, ServiceDep
from vidinfer.api.schemas import (
    JobListOut,
    JobStatusOut,
    UploadIn,
    UploadOut,
    VideoInferIn,
    VideoInferOut,
    error_responses,
)
from vidinfer.core.sampling import MIN_INFER_FPS, check_skip_static, parse_fps
from vidinfer.core.tracking import AnalysisOptions, check_analysis_tasks
from vidinfer.errors import InvalidInput, Unavailable
from vidinfer.fetch import UrlPolicy
from vidinfer.jobs import notify
from vidinfer.jobs.requests import check_models, check_own_upload, model_requests, upload_prefix
from vidinfer.jobs.view import status_body, status_json
from vidinfer.storage.base import parse_s3_url, safe_name
from vidinfer.urls import parse_http_url, url_scheme

log = logging.getLogger(__name__)
router = APIRouter(tags=["video inference"])
ERRORS = error_responses(400, 401, 404, 422, 429)


def _both(path: str) -> list[str]:
    return [path, path + "/"]


def _route(method: str, path: str, **kwargs):  # noqa: ANN202 - decorator: the path with and without "/"
    def register(fn):  # noqa: ANN001, ANN202
        for p in _both(path):
            router.add_api_route(p, fn, methods=[method], include_in_schema=not p.endswith("/"),
                                 responses=ERRORS, **kwargs)
        return fn

    return register


@_route("POST", "/video_upload_signed_url", response_model=UploadOut)
def upload_url(service: ServiceDep, caller: CallerDep, body: UploadIn | None = None) -> UploadOut:
    """A URL to PUT one video to (``Content-Type: application/octet-stream``), then pass as ``input_url``."""
    name = safe_name((body or UploadIn()).file_name)
    key = f"{upload_prefix(caller.workspace)}{uuid.uuid4().hex}/{name}"
    return UploadOut(signed_url=service.blobs.sign_url("PUT", key, service.settings.upload_url_ttl))


@_route("POST", "/videoinfer", response_model=VideoInferOut)
def submit(service: ServiceDep, caller: CallerDep, body: VideoInferIn,
           idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> VideoInferOut:
    """Start a job; ``Idempotency-Key`` makes a retried submission return the same job."""
    fps = parse_fps(body.infer_fps)
    if fps < MIN_INFER_FPS:
        raise InvalidInput(f"infer_fps must be at least {float(MIN_INFER_FPS):g}, got {float(fps):g}",
                           code="invalid_infer_fps")
    policy = UrlPolicy.from_allowlist(service.settings.url_allowlist)
    _check_input_url(service, caller.workspace, body.input_url, policy)
    if body.notify_url:
        policy.check(body.notify_url, field="notify_url")  # checked again at delivery: DNS may change
    models = check_models(service.registry, caller.workspace, model_requests([m.model_dump() for m in body.models]))
    keys = [m["model_id"] for m in models]
    if len(set(keys)) != len(keys):
        raise InvalidInput("each model_id may appear once (it is its results key)", code="duplicate_model")
    options = AnalysisOptions.parse(body.tracker, body.lines, body.zones)
    skip_static = check_skip_static(body.skip_static)
    tasks = {m["model_id"]: m["inference_type"] for m in models}
    if all(tasks.values()):  # known for every model without loading it (else the worker checks)
        check_analysis_tasks(tasks, options)
    job, created = service.store.create(
        caller.workspace, input_url=body.input_url, infer_fps=f"{fps.numerator}/{fps.denominator}", models=models,
        notify_url=body.notify_url, idempotency_key=idempotency_key,
        options={**options.as_dict(), **({"skip_static": skip_static} if skip_static is not None else {})},
    )
    message = "job queued" if created else "an earlier submission with this Idempotency-Key"
    if created and service.dispatch is not None:
        try:
            service.dispatch(job.id)
        except Unavailable as exc:  # the job is saved: the API sends it again once the broker is back
            log.warning("job %s saved but not sent: %s", job.id, exc.message)
            message = "job queued; the message broker is unreachable, so it starts once the broker is back"
    return VideoInferOut(job_id=job.id, message=message)


def _check_input_url(service: ServiceDep, workspace: str, url: str, policy: UrlPolicy) -> None:
    """Refuse a malformed URL before any part of the server parses it (``invalid_url``), then an upload of
    another workspace, an ``s3://`` URL without a valid bucket and key, and an address that may not be fetched."""
    scheme = url_scheme(url, "input_url", spaces=True)
    if scheme in ("gs", "az", "abfs", "abfss"):
        raise InvalidInput(f"{scheme}:// input URLs are not supported: use s3:// (with the server's S3 settings) "
                           "or an http(s) URL, e.g. a signed URL of the object", code="invalid_url")
    if scheme == "s3":  # read by the workers with the configured S3 endpoint and credentials
        parse_s3_url(url)
    else:
        parse_http_url(url, "input_url")  # only well-formed http(s) URLs reach the store's URL parser
    key = service.blobs.key_from_url(url)
    if key is not None:
        check_own_upload(key, workspace)
        if not service.blobs.exists(key):
            raise InvalidInput("nothing was uploaded to this URL yet: PUT the video to it first",
                               code="upload_missing")
        return
    if scheme != "s3":
        policy.check(url)  # refused addresses fail now; the worker checks every redirect again


@_route("GET", "/videoinfer", response_model=JobStatusOut, response_model_exclude_none=False)
def status(service: ServiceDep, caller: CallerDep, job_id: Annotated[str, Query(max_length=64)]) -> Response:
    """The job's state: ``status`` 0 done, 1 running, 2+ failed; ``progress``, ETA, results URL."""
    service.status_limiter.check(caller.api_key)
    job = service.store.get(job_id, caller.workspace)
    # the body written directly (status_json), not re-validated through JobStatusOut, which still documents it
    body = status_body(job, service.blobs, service.settings.results_url_ttl)
    return Response(status_json(body), media_type="application/json")


@_route("DELETE", "/videoinfer", response_model=JobStatusOut)
def cancel(service: ServiceDep, caller: CallerDep, job_id: Annotated[str, Query(max_length=64)]) -> dict:
    """Cancel: a queued job at once (its ``notify_url`` is sent the cancelled status), a running one at its
    next batch, or within a second while it fetches its input URL (its worker sends the webhook)."""
    job, ended = service.store.cancel(job_id, caller.workspace)
    if ended:
        notify.job_ended(job, service.settings, service.blobs)
    return status_body(job, service.blobs, service.settings.results_url_ttl)


@_route("GET", "/videoinfers", response_model=JobListOut)
def list_jobs(service: ServiceDep, caller: CallerDep,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """This workspace's jobs, newest first."""
    ttl = service.settings.results_url_ttl
    return {"jobs": [status_body(j, service.blobs, ttl) for j in service.store.list(caller.workspace, limit=limit)]}

"""Search over what was seen: the moments of a workspace's finished jobs that match filters and a text.

``GET /search`` merges the matching samples of each job into moments (``vidinfer.moments``); each
moment links a thumbnail of its best frame, and on request a clip of its range, both made on first
use from the job's input (``vidinfer.clips``), kept in the blob store beside the results, and served
by a redirect to a signed URL.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse

from vidinfer.api.deps import CallerDep, Service, ServiceDep
from vidinfer.api.schemas import error_responses
from vidinfer.errors import InvalidInput, NotFound
from vidinfer.jobs.requests import model_spec
from vidinfer.jobs.states import JobState
from vidinfer.jobs.store import Job
from vidinfer.models.registry import BUILTINS

router = APIRouter(tags=["search"], responses=error_responses(400, 401, 404, 422))

#: finished jobs searched per query, newest first
MAX_JOBS = 500


def _clip_model(service: Service, workspace: str, model: str, model_version: str) -> Any:
    """The CLIP model entry named as a job names it (never a path), refused unless it is CLIP."""
    names = {e.name for e in service.registry.entries()}
    spec = model_spec(names, set(BUILTINS), workspace, model, model_version)
    entry = service.registry.resolve(spec)  # a registered name or a built-in: model_spec found it
    if not entry.is_clip:
        raise InvalidInput(f"{model}/{model_version} is not a CLIP model", code="not_a_clip_model")
    return entry


def _ran_with(job: Job, model: str, model_version: str) -> bool:
    return any((m["model_id"], str(m.get("model_version", "1"))) == (model, model_version) for m in job.models)


def _jobs(service: Service, workspace: str, job_ids: list[str]) -> list[Job]:
    """The finished jobs to search: those named (each must be this workspace's), else the newest."""
    if job_ids:
        jobs = [service.store.get(j, workspace) for j in dict.fromkeys(job_ids)]  # another workspace's: 404
    else:
        jobs = service.store.list(workspace, limit=MAX_JOBS, state=JobState.DONE)
    return [j for j in jobs if j.state is JobState.DONE and j.result_key]


def _results(service: Service, job: Job) -> dict[str, Any]:
    if not job.result_key:
        raise NotFound("the job has no results", code="results_missing")
    return json.loads(service.blobs.get_bytes(job.result_key))


@router.get("/search")
def search(service: ServiceDep, caller: CallerDep,
           q: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
           limit: Annotated[int, Query(ge=1, le=200)] = 10,
           model: Annotated[str, Query(max_length=128)] = "clip",
           model_version: Annotated[str, Query(max_length=128)] = "1",
           classes: Annotated[list[str], Query(alias="class", max_length=50)] = [],  # noqa: B006 - FastAPI's way
           min_confidence: Annotated[float, Query(ge=0, le=1)] = 0.0,
           track_id: Annotated[list[int], Query(max_length=50)] = [],  # noqa: B006
           zone: Annotated[str | None, Query(max_length=2000)] = None,
           start: Annotated[float | None, Query(ge=0)] = None,
           end: Annotated[float | None, Query(gt=0)] = None,
           job_id: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
           gap: Annotated[float, Query(ge=0, le=3600)] = 0.0,
           clip: bool = False) -> dict[str, Any]:
    """Moments of this workspace's finished jobs: runs of samples whose predictions match the filters.

    Filters: ``class`` (repeatable), ``min_confidence``, ``track_id`` (repeatable; tracked jobs),
    ``zone`` (``x1,y1,x2,y2,x3,y3,...`` in source pixels, or a zone's name in the job's counts),
    ``start``/``end`` seconds, ``job_id`` (repeatable; default: the newest finished jobs). Each moment
    has ``start``, ``end``, ``best_frame``, ``best_time``, ``score``, a ``thumbnail_url`` and, with
    ``clip=true``, a ``clip_url``. With ``q``, only jobs run with the CLIP model ``model``/``model_version``
    are searched and moments rank by their best frame's similarity to ``q`` (``hits`` lists the best
    frames, as before); the model is resolved as in ``POST /videoinfer`` (never a path) and loaded only
    when some of the searched jobs ran with it. Without ``q``, a moment's score is its best confidence.
    """
    from vidinfer.clips import MAX_CLIP_SECONDS
    from vidinfer.moments import check_filters, find_moments
    from vidinfer.search import rank

    filters = check_filters(classes, min_confidence, track_id, zone, start, end, gap)
    jobs = _jobs(service, caller.workspace, job_id)  # first: another workspace's job is 404, whatever else
    entry = _clip_model(service, caller.workspace, model, model_version) if q is not None else None
    if entry is not None:
        jobs = [j for j in jobs if _ran_with(j, model, model_version)]
    body: dict[str, Any] = {"query": q, "jobs_searched": len(jobs)}
    if q is not None:
        body["hits"] = []
    body["moments"] = []
    if not jobs:
        return body
    documents = [(j.id, _results(service, j)) for j in jobs]
    query = None
    if entry is not None:
        if not q.strip():
            raise InvalidInput("the search text is empty")
        (query,) = service.registry.load_entry(entry).embed_text([q])
        hits = rank(query, documents, key=model, top_k=limit)
        body["hits"] = [{"job_id": h.source, "frame_offset": h.frame_offset, "time_offset": h.time_offset,
                         "score": h.score} for h in hits]
    moments = find_moments(documents, filters, query=query, limit=limit)
    out = []
    for m in moments:
        item = m.as_dict()
        item["job_id"] = item.pop("source")
        item["thumbnail_url"] = "/search/thumbnail?" + urlencode({"job_id": m.source, "frame": m.best_frame})
        if clip:
            end = min(m.end, round(m.start + MAX_CLIP_SECONDS, 6))  # a long moment's clip is its beginning
            item["clip_url"] = "/search/clip?" + urlencode({"job_id": m.source, "start": m.start, "end": end})
        out.append(item)
    body["moments"] = out
    return body


def _make_once(service: Service, job: Job, key: str, make: Any) -> RedirectResponse:
    """Redirect to the signed URL of ``key``, made first (from the job's input) unless it is stored."""
    from vidinfer.jobs.runner import Runner

    if not service.blobs.exists(key):
        runner = Runner(service.settings, service.store, service.blobs, service.registry)
        with tempfile.TemporaryDirectory(prefix="vidinfer-moment-") as tmp, \
                runner.input_file(job, Path(tmp), should_cancel=lambda: False) as video:
            made = Path(tmp) / ("made" + Path(key).suffix)
            make(str(video), made)
            service.blobs.put_file(key, made)
    return RedirectResponse(service.blobs.sign_url("GET", key, service.settings.results_url_ttl), status_code=307)


@router.get("/search/thumbnail", response_class=RedirectResponse, status_code=307)
def thumbnail(service: ServiceDep, caller: CallerDep, job_id: Annotated[str, Query(max_length=64)],
              frame: Annotated[int, Query(ge=0)]) -> RedirectResponse:
    """A JPEG (320 px wide) of one sampled frame of a finished job: a redirect to its signed URL.

    ``frame`` must be one of the job's sampled frames (a moment's ``best_frame``); made on first use."""
    from vidinfer.clips import thumbnail as make_thumbnail

    job = service.store.get(job_id, caller.workspace)  # another workspace's job: 404
    results = _results(service, job)
    frames = results.get("frame_offset") or []
    if frame not in frames:
        raise InvalidInput(f"frame {frame} is not one of the job's sampled frames", code="invalid_range")
    time = float((results.get("time_offset") or [])[frames.index(frame)])
    key = f"moments/{job.workspace}/{job.id}/frame-{frame}.jpg"
    return _make_once(service, job, key, lambda video, out: out.write_bytes(make_thumbnail(video, time)))


@router.get("/search/clip", response_class=RedirectResponse, status_code=307)
def clip(service: ServiceDep, caller: CallerDep, job_id: Annotated[str, Query(max_length=64)],
         start: Annotated[float, Query(ge=0)], end: Annotated[float, Query(gt=0)]) -> RedirectResponse:
    """An MP4 of ``[start, end)`` of a finished job's input (a moment's range, 120 s at most): a redirect
    to its signed URL. A stream copy where ``start`` is a keyframe, else a fast re-encode; made on first use."""
    from vidinfer.clips import MAX_CLIP_SECONDS, cut

    job = service.store.get(job_id, caller.workspace)
    if job.state is not JobState.DONE:
        raise InvalidInput(f"the job is {job.state.value}: only a finished job's moments have clips",
                           code="job_not_done")
    duration = (job.stats.get("video") or {}).get("duration")
    if not start < end or (duration and start >= float(duration)):
        raise InvalidInput(f"the clip's range {start}..{end} is not within the video", code="invalid_range")
    if end - start > MAX_CLIP_SECONDS:
        raise InvalidInput(f"a clip is at most {MAX_CLIP_SECONDS:.0f} s long", code="clip_too_long")
    start_ms, end_ms = round(start * 1000), round(end * 1000)
    key = f"moments/{job.workspace}/{job.id}/clip-{start_ms}-{end_ms}.mp4"
    return _make_once(service, job, key, lambda video, out: cut(video, start_ms / 1000, end_ms / 1000, out))

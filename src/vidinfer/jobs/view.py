"""A job as clients see it: the body of ``GET /videoinfer`` and of the completion webhook."""

from __future__ import annotations

import json
from typing import Any

try:  # the server extra installs orjson: several times faster, and the same JSON
    import orjson
except ImportError:  # pragma: no cover - a server installed without its extra
    orjson = None  # type: ignore[assignment]

from vidinfer.jobs.states import JobState, wire_status
from vidinfer.jobs.store import Job
from vidinfer.storage.base import BlobStore


def status_body(job: Job, blobs: BlobStore, results_url_ttl: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": wire_status(job.state, job.failure),
        "state": job.state.value,
        "progress": round(job.progress, 4),
        "frames_done": job.frames_done,
        "frames_total": job.frames_total,
        "eta_seconds": job.eta_seconds(),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts": job.attempts,
    }
    key = blobs.key_from_url(job.input_url)
    # what a player can load: a signed GET of an upload, else the URL the job was given
    body["video_url"] = blobs.sign_url("GET", key, results_url_ttl) if key else job.input_url
    body["models"] = [m["model_id"] for m in job.models]
    if job.state is JobState.DONE and job.result_key:
        body["output_signed_url"] = blobs.sign_url("GET", job.result_key, results_url_ttl)
        body["null_frames"] = job.stats.get("null_frames", 0)
        body["partial"] = bool(job.stats.get("partial"))
        if job.stats.get("warnings"):
            body["warnings"] = job.stats["warnings"]
    if job.state in (JobState.FAILED, JobState.CANCELLED):
        body["error"] = {"code": job.error_code or job.failure or "internal_error",
                         "message": job.error_message or ""}
    return body


#: ``JobStatusOut``'s declared fields, in its order: they come first and are always present (null when unset)
STATUS_FIELDS = ("job_id", "status", "state", "progress", "frames_done", "frames_total", "eta_seconds",
                 "output_signed_url", "error")


def status_json(body: dict[str, Any]) -> bytes:
    """``body`` as the JSON ``response_model=JobStatusOut`` would answer (its fields first, null when unset,
    then the rest in order), written directly: validating a body the server just built cost a poll more
    CPU than reading the job."""
    out = {name: body.get(name) for name in STATUS_FIELDS}
    out.update(body)
    if orjson is not None:
        return orjson.dumps(out)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()

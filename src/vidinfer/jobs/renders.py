"""Renders of finished jobs: a second kind of work for the same workers, in the same database.

``POST /videoinfer/render`` records one row per job in ``renders`` (queued); the
embedded pool's workers take a render whenever no inference job is waiting
(``claim``), draw the job's results onto its input video (``vidinfer.render``) and
store the MP4 under ``renders/WORKSPACE/JOB.mp4``. A render never runs in the API
process.

Durability, as for jobs: every state change is one conditional update. A running
render holds a lease that its progress writes renew; a render whose worker died (a
crash, a killed server) is taken again by the next free worker once the lease has
run out (``LEASE_SECONDS``), or failed with ``worker_lost`` after ``max_attempts``
tries. Asking again for a render that is done or failed starts it afresh with the
new options; asking while one is queued or running returns that one.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, Integer, String, Table, Text, insert, or_, select, update

from vidinfer.errors import InvalidInput, NotFound, VidinferError
from vidinfer.jobs.db import READ_ONLY, metadata
from vidinfer.jobs.states import FAILURE_STATUS, JobState, failure_kind, wire_status
from vidinfer.jobs.store import Job, JobStore

log = logging.getLogger(__name__)

#: seconds without a progress write after which a running render is presumed lost
LEASE_SECONDS = 60.0
#: seconds between progress writes (each renews the lease)
PROGRESS_EVERY = 0.5

renders = Table(
    "renders", metadata,
    Column("job_id", String(32), primary_key=True),
    Column("workspace", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("options", Text, nullable=False),  # JSON: blur, start, end, models
    Column("failure", String(32)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker", String(64)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("updated_at", Float, nullable=False),
    Column("frames_done", Integer, nullable=False, default=0),
    Column("frames_total", Integer),
    Column("result_key", Text),
)


def render_key(job: Job) -> str:
    return f"renders/{job.workspace}/{job.id}.mp4"


def check_options(raw: dict[str, Any] | None, video_seconds: float | None = None) -> dict[str, Any]:
    """The render options a client may send, checked: ``blur``, ``start``, ``end``, ``models``; with the
    job's ``video_seconds``, a start past the video's end is refused now rather than by the worker."""
    from vidinfer.core.sampling import check_range, check_range_in_video

    raw = raw or {}
    blur = raw.get("blur") or []
    models = raw.get("models") or []
    if not isinstance(blur, list) or not all(isinstance(c, str) and 0 < len(c) <= 128 for c in blur) \
            or len(blur) > 100:
        raise InvalidInput("blur must be a list of class names", code="invalid_render_options")
    if not isinstance(models, list) or not all(isinstance(m, str) and 0 < len(m) <= 128 for m in models):
        raise InvalidInput("models must be a list of results keys", code="invalid_render_options")
    start, end = raw.get("start"), raw.get("end")
    for name, value in (("start", start), ("end", end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidInput(f"{name} must be a number of seconds", code="invalid_render_options")
    s, _ = check_range(start, end)
    if video_seconds:
        check_range_in_video(s, float(video_seconds))
    return {"blur": blur, "start": start, "end": end, "models": models}


@dataclass(frozen=True)
class Render:
    """A snapshot of one render's row."""

    job_id: str
    workspace: str
    state: JobState
    options: dict[str, Any]
    failure: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    frames_done: int
    frames_total: int | None
    result_key: str | None

    @classmethod
    def from_row(cls, row: Any) -> Render:
        m = row._mapping
        return cls(job_id=m["job_id"], workspace=m["workspace"], state=JobState(m["state"]),
                   options=json.loads(m["options"]), failure=m["failure"], error_code=m["error_code"],
                   error_message=m["error_message"], attempts=m["attempts"], created_at=m["created_at"],
                   started_at=m["started_at"], finished_at=m["finished_at"], frames_done=m["frames_done"],
                   frames_total=m["frames_total"], result_key=m["result_key"])

    def status_body(self, sign: Callable[[str], str]) -> dict[str, Any]:
        """What ``GET /videoinfer/render`` answers; ``sign(key)`` makes the download URL."""
        progress = 1.0 if self.state is JobState.DONE else (
            min(1.0, self.frames_done / self.frames_total) if self.frames_total else 0.0)
        body: dict[str, Any] = {
            "job_id": self.job_id, "status": wire_status(self.state, self.failure), "state": self.state.value,
            "progress": round(progress, 4), "frames_done": self.frames_done, "frames_total": self.frames_total,
            "options": self.options, "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "attempts": self.attempts,
        }
        if self.state is JobState.DONE and self.result_key:
            body["rendered_signed_url"] = sign(self.result_key)
        if self.state in (JobState.FAILED, JobState.CANCELLED):
            body["error"] = {"code": self.error_code or self.failure or "internal_error",
                             "message": self.error_message or ""}
        return body


class RenderStore:
    """The ``renders`` table, over a job store's engine (created if the database predates it)."""

    def __init__(self, store: JobStore, max_attempts: int = 3) -> None:
        self.store = store
        self.engine = store.engine
        self._reads = store.engine.execution_options(**{READ_ONLY: True})
        self.max_attempts = max_attempts
        renders.create(self.engine, checkfirst=True)

    def request(self, job: Job, options: dict[str, Any]) -> Render:
        """Queue a render of ``job`` (finished), unless one is queued or running already."""
        if job.state is not JobState.DONE or not job.result_key:
            raise InvalidInput(f"the job is {job.state.value}: only a finished job (status 0) can be rendered",
                               code="job_not_done")
        now = time.time()
        values = dict(state=JobState.QUEUED.value, options=json.dumps(options), failure=None, error_code=None,
                      error_message=None, attempts=0, worker=None, created_at=now, started_at=None,
                      finished_at=None, updated_at=now, frames_done=0, frames_total=None, result_key=None)
        with self.engine.begin() as conn:
            row = conn.execute(select(renders.c.state).where(renders.c.job_id == job.id)).first()
            if row is None:
                conn.execute(insert(renders).values(job_id=job.id, workspace=job.workspace, **values))
            elif JobState(row.state).finished:
                conn.execute(update(renders).where(renders.c.job_id == job.id).values(**values))
        return self.get(job.id, job.workspace)

    def get(self, job_id: str, workspace: str | None = None) -> Render:
        query = select(renders).where(renders.c.job_id == job_id)
        if workspace is not None:
            query = query.where(renders.c.workspace == workspace)
        with self._reads.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound("no render of this job in this workspace: POST /videoinfer/render first",
                           code="render_not_found")
        return Render.from_row(row)

    def claim(self, worker: str) -> Render | None:
        """Take the oldest queued render, or one whose worker's lease ran out; None when there is none."""
        for _ in range(8):
            stale = time.time() - LEASE_SECONDS
            with self._reads.connect() as conn:
                row = conn.execute(select(renders.c.job_id, renders.c.state, renders.c.attempts).where(or_(
                    renders.c.state == JobState.QUEUED.value,
                    (renders.c.state == JobState.RUNNING.value) & (renders.c.updated_at < stale),
                )).order_by(renders.c.created_at).limit(1)).first()
            if row is None:
                return None
            now = time.time()
            cond = [renders.c.job_id == row.job_id, renders.c.state == row.state, renders.c.attempts == row.attempts]
            if row.state == JobState.RUNNING.value:
                cond.append(renders.c.updated_at < stale)
            with self.engine.begin() as conn:
                if row.attempts >= self.max_attempts:
                    conn.execute(update(renders).where(*cond).values(
                        state=JobState.FAILED.value, failure="worker_lost", error_code="worker_lost",
                        error_message=f"the worker rendering this job stopped {row.attempts} times",
                        finished_at=now, updated_at=now))
                    continue
                taken = conn.execute(update(renders).where(*cond).values(
                    state=JobState.RUNNING.value, attempts=renders.c.attempts + 1, worker=worker, started_at=now,
                    updated_at=now, frames_done=0)).rowcount
            if taken:
                return self.get(row.job_id)
        return None

    def _update_running(self, render: Render, **values: Any) -> bool:
        values.setdefault("updated_at", time.time())
        with self.engine.begin() as conn:
            return bool(conn.execute(update(renders).where(
                renders.c.job_id == render.job_id, renders.c.state == JobState.RUNNING.value,
                renders.c.attempts == render.attempts).values(**values)).rowcount)

    def progress(self, render: Render, done: int, total: int) -> bool:
        return self._update_running(render, frames_done=done, frames_total=total)

    def finish(self, render: Render, key: str, frames: int) -> bool:
        return self._update_running(render, state=JobState.DONE.value, result_key=key, frames_done=frames,
                                    frames_total=frames, finished_at=time.time())

    def fail(self, render: Render, failure: str, code: str, message: str) -> bool:
        return self._update_running(render, state=JobState.FAILED.value, failure=failure, error_code=code,
                                    error_message=message[:2000], finished_at=time.time())


class _Lost(Exception):
    """This worker no longer holds the render (its lease was taken over): stop quietly."""


def run_render(runner: Any, renders_: RenderStore, render: Render) -> None:
    """Render ``render`` (claimed) in this worker with ``runner``'s settings and stores; never raises."""
    from vidinfer.render import render_video

    store, blobs = runner.store, runner.blobs
    try:
        job = store.get(render.job_id, render.workspace)
        if not job.result_key:
            raise NotFound("the job has no results to render", code="results_missing")
        results = json.loads(blobs.get_bytes(job.result_key))
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if not runner.alive():
                raise SystemExit("the server that started this worker is gone")
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or done == total:
                last[0] = now
                if not renders_.progress(render, done, total):
                    raise _Lost

        options = render.options
        with tempfile.TemporaryDirectory(prefix="vidinfer-render-") as tmp, \
                runner.input_file(job, Path(tmp)) as video:
            out = Path(tmp) / "rendered.mp4"
            stats = render_video(str(video), results, out, models=options.get("models") or None,
                                 blur=options.get("blur") or (), start=options.get("start"),
                                 end=options.get("end"), on_progress=progress,
                                 threads=runner.settings.decode_threads)
            key = render_key(job)
            blobs.put_file(key, out)
        renders_.finish(render, key, stats.frames)
        log.info("render of job %s: %d frames", job.id, stats.frames)
    except _Lost:
        log.warning("render of job %s was taken over by another worker", render.job_id)
    except VidinferError as exc:
        kind = failure_kind(exc)
        log.info("render of job %s %s: %s", render.job_id, kind, exc.message)
        renders_.fail(render, kind if kind in FAILURE_STATUS else "internal_error", exc.code,
                      _without_server_paths(exc.message))
    except Exception:  # a bug: keep the worker alive; the log has what happened, the client gets no internals
        log.exception("render of job %s failed unexpectedly", render.job_id)
        renders_.fail(render, "internal_error", "internal_error",
                      "the render failed on an unexpected error (the server's log has the details)")


def _without_server_paths(message: str) -> str:
    """``message`` with the paths of the render's scratch files (under the temp directory) taken out."""
    return re.sub(re.escape(tempfile.gettempdir()) + r"/\S*", "<temporary file>", message)

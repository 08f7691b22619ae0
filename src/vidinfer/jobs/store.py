"""The job store: every job's state lives here, and every change is one atomic update.

State changes are conditional updates (``... WHERE state = 'queued'``), so two
workers can never both claim a job; a worker's later updates also name the
attempt it holds, so a worker that was presumed dead cannot overwrite the work
of the one that replaced it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from vidinfer.errors import IdempotencyConflict, InvalidInput, NotFound
from vidinfer.jobs.db import READ_ONLY, api_keys, job_chunks, jobs, make_engine, workspaces
from vidinfer.jobs.states import JobState

_WORKSPACE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: names the API's own paths take: a workspace so named would be shadowed in the SDK's GET /<workspace>
RESERVED_WORKSPACES = frozenset({"videoinfer", "videoinfers", "video_upload_signed_url", "health", "docs", "redoc",
                                 "openapi.json", "blobs", "results.schema.json", "static", "ui", "api"})
KEY_PREFIX = "vi_"


def _models_and_options(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``models`` column: a list of model requests, or ``{"models": [...], "options": {...}}``."""
    value = json.loads(text)
    if isinstance(value, dict):
        return value["models"], value.get("options") or {}
    return value, {}


@dataclass(frozen=True)
class Job:
    """A snapshot of one job's row."""

    id: str
    workspace: str
    state: JobState
    failure: str | None
    error_code: str | None
    error_message: str | None
    input_url: str
    infer_fps: str
    models: list[dict[str, Any]]
    notify_url: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    attempts: int
    cancel_requested: bool
    frames_done: int
    frames_total: int | None
    result_key: str | None
    stats: dict[str, Any]
    #: tracking and counting asked for (``AnalysisOptions.as_dict``); {} for none
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        m = row._mapping
        models, options = _models_and_options(m["models"])
        return cls(
            id=m["id"], workspace=m["workspace"], state=JobState(m["state"]), failure=m["failure"],
            error_code=m["error_code"], error_message=m["error_message"], input_url=m["input_url"],
            infer_fps=m["infer_fps"], models=models, notify_url=m["notify_url"],
            created_at=m["created_at"], started_at=m["started_at"], finished_at=m["finished_at"],
            updated_at=m["updated_at"], attempts=m["attempts"], cancel_requested=bool(m["cancel_requested"]),
            frames_done=m["frames_done"], frames_total=m["frames_total"], result_key=m["result_key"],
            stats=json.loads(m["stats"]) if m["stats"] else {}, options=options,
        )

    @property
    def progress(self) -> float:
        if self.state is JobState.DONE:
            return 1.0
        if not self.frames_total:
            return 0.0
        return min(1.0, self.frames_done / self.frames_total)

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left at the pace so far; None until there is a pace to go by."""
        if self.state is not JobState.RUNNING or not self.started_at or not self.frames_done or not self.frames_total:
            return None
        elapsed = (now or time.time()) - self.started_at
        return round(max(0.0, elapsed * (self.frames_total - self.frames_done) / self.frames_done), 1)


def _same_request(job: Job, request: dict[str, Any], idempotency_key: str) -> Job:
    """``job`` when it was made from the same request (compared as stored, so ``5`` and ``"5/1"`` frames
    per second, or keys in another order, are the same); else ``IdempotencyConflict``."""
    made = {"input_url": job.input_url, "infer_fps": job.infer_fps, "models": job.models,
            "notify_url": job.notify_url, "options": job.options}
    if json.loads(json.dumps(request)) != made:
        differ = sorted(k for k in made if json.loads(json.dumps(request[k])) != made[k])
        raise IdempotencyConflict(
            f"the Idempotency-Key {idempotency_key[:80]!r} was already used for job {job.id} with a different "
            f"request ({', '.join(differ)} differ): use a new key for a new request", code="idempotency_key_reused")
    return job


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


#: the status poll's two reads, built once: building a SELECT cost more CPU than SQLite took to run it
_KEY_BY_HASH = select(api_keys.c.workspace, api_keys.c.revoked).where(api_keys.c.key_hash == bindparam("h"))
_JOB_BY_ID = select(jobs).where(jobs.c.id == bindparam("id"))
_JOB_BY_ID_IN = _JOB_BY_ID.where(jobs.c.workspace == bindparam("ws"))
#: valid keys remembered at most this many at a time (a flood of distinct valid keys only re-reads)
KEY_CACHE_SIZE = 10_000


class JobStore:
    """Workspaces, API keys and jobs, over one SQLAlchemy engine."""

    def __init__(self, url: str, *, key_cache_ttl: float = 1.0) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self._reads: Engine = self.engine.execution_options(**{READ_ONLY: True})  # single-SELECT reads only
        #: how long a valid key's workspace is remembered (s; 0: not at all). A key revoked in this process
        #: stops working at once; revoked from another one (the CLI), within this many seconds.
        self.key_cache_ttl = key_cache_ttl
        self._key_cache: dict[str, tuple[str, float]] = {}  # key hash -> (workspace, monotonic expiry)

    def close(self) -> None:
        self.engine.dispose()

    # -- workspaces and keys ----------------------------------------------------------
    def create_key(self, workspace: str) -> str:
        """A new API key for ``workspace`` (created if new); only its hash is kept."""
        if workspace in RESERVED_WORKSPACES:
            raise InvalidInput(f"{workspace!r} is one of the API's own paths; choose another workspace name",
                               code="invalid_workspace")
        if not _WORKSPACE.match(workspace):
            raise InvalidInput(f"invalid workspace name {workspace!r}: use lowercase letters, digits, '-' and '_'",
                               code="invalid_workspace")
        key = KEY_PREFIX + secrets.token_hex(20)  # lowercase letters: the official SDK needs them
        now = time.time()
        with self.engine.begin() as conn:
            if conn.execute(select(workspaces.c.name).where(workspaces.c.name == workspace)).first() is None:
                conn.execute(insert(workspaces).values(name=workspace, created_at=now))
            conn.execute(insert(api_keys).values(key_hash=hash_key(key), workspace=workspace, prefix=key[:10],
                                                 created_at=now, revoked=False))
        return key

    def workspace_for_key(self, key: str) -> str | None:
        """The workspace a key belongs to, or None for an unknown or revoked key.

        The database sees only the key's SHA-256, and finds the row by it: the time an index lookup
        takes tells an attacker about the hash, which gives away nothing of the key. A valid key's
        workspace is then remembered for ``key_cache_ttl`` seconds (by hash, never the key), so a client
        polling status costs one database read a poll, not two; unknown and revoked keys are not kept."""
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._key_cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        return self._read_key(digest, now)

    def cached_workspace(self, key: str) -> str | None:
        """The workspace of a key validated less than ``key_cache_ttl`` seconds ago, without touching the
        database (so an async caller need not hop to a thread); None: ask ``workspace_for_key``."""
        hit = self._key_cache.get(hash_key(key))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def _read_key(self, digest: str, now: float) -> str | None:
        with self._reads.connect() as conn:
            row = conn.execute(_KEY_BY_HASH, {"h": digest}).first()
        if row is None or row.revoked:
            self._key_cache.pop(digest, None)
            return None
        if self.key_cache_ttl > 0:
            if len(self._key_cache) >= KEY_CACHE_SIZE:
                self._key_cache = {h: v for h, v in self._key_cache.items() if v[1] > now}
            if len(self._key_cache) < KEY_CACHE_SIZE:
                self._key_cache[digest] = (row.workspace, now + self.key_cache_ttl)
        return row.workspace

    def list_keys(self) -> list[dict[str, Any]]:
        with self._reads.connect() as conn:
            rows = conn.execute(select(api_keys.c.workspace, api_keys.c.prefix, api_keys.c.created_at,
                                       api_keys.c.revoked).order_by(api_keys.c.created_at)).all()
        return [dict(r._mapping) for r in rows]

    def revoke_key(self, prefix: str) -> int:
        """Revoke the keys whose kept prefix is ``prefix``: at once in this process (its key cache is emptied),
        within ``key_cache_ttl`` seconds in the others."""
        with self.engine.begin() as conn:
            count = conn.execute(update(api_keys).where(api_keys.c.prefix == prefix).values(revoked=True)).rowcount
        self._key_cache = {}
        return count

    # -- submitting and reading -------------------------------------------------------
    def create(self, workspace: str, *, input_url: str, infer_fps: str, models: list[dict[str, Any]],
               notify_url: str | None = None, idempotency_key: str | None = None,
               options: dict[str, Any] | None = None) -> tuple[Job, bool]:
        """A new queued job, or the one already made with the same idempotency key (then False); that key
        with a different request raises ``IdempotencyConflict``.

        ``options`` (tracking, lines, zones) are kept in the ``models`` column, as
        ``{"models": [...], "options": {...}}``: no new column, so existing databases need no migration."""
        request = {"input_url": input_url, "infer_fps": infer_fps, "models": models, "notify_url": notify_url,
                   "options": options or {}}
        if idempotency_key is not None:
            existing = self._by_idempotency_key(workspace, idempotency_key)
            if existing is not None:
                return _same_request(existing, request, idempotency_key), False
        job_id = uuid.uuid4().hex
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(jobs).values(
                    id=job_id, workspace=workspace, state=JobState.QUEUED.value, input_url=input_url,
                    infer_fps=infer_fps, models=json.dumps({"models": models, "options": options} if options else models),
                    notify_url=notify_url,
                    idempotency_key=idempotency_key, created_at=now, updated_at=now, attempts=0,
                    cancel_requested=False, frames_done=0,
                ))
        except IntegrityError:
            existing = self._by_idempotency_key(workspace, idempotency_key or "")
            if existing is None:
                raise
            return _same_request(existing, request, idempotency_key or ""), False
        return self.get(job_id), True

    def _by_idempotency_key(self, workspace: str, key: str) -> Job | None:
        with self._reads.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.workspace == workspace,
                                                  jobs.c.idempotency_key == key)).first()
        return Job.from_row(row) if row else None

    def get(self, job_id: str, workspace: str | None = None) -> Job:
        """The job, if it exists and belongs to ``workspace`` (when given); else ``NotFound``."""
        with self._reads.connect() as conn:
            if workspace is None:
                row = conn.execute(_JOB_BY_ID, {"id": job_id}).first()
            else:
                row = conn.execute(_JOB_BY_ID_IN, {"id": job_id, "ws": workspace}).first()
        if row is None:
            raise NotFound("no such job in this workspace", code="job_not_found")
        return Job.from_row(row)

    def list(self, workspace: str, *, limit: int = 100, state: JobState | None = None) -> list[Job]:
        query = select(jobs).where(jobs.c.workspace == workspace)
        if state is not None:
            query = query.where(jobs.c.state == state.value)
        with self._reads.connect() as conn:
            rows = conn.execute(query.order_by(jobs.c.created_at.desc()).limit(limit)).all()
        return [Job.from_row(r) for r in rows]

    def queued_before(self, before: float, limit: int = 1000) -> list[str]:
        with self._reads.connect() as conn:
            return list(conn.execute(select(jobs.c.id).where(jobs.c.state == JobState.QUEUED.value,
                                                             jobs.c.updated_at < before).limit(limit)).scalars())

    def counts(self) -> dict[str, int]:
        with self._reads.connect() as conn:
            rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
        return {state: n for state, n in rows}

    # -- the worker's side ------------------------------------------------------------
    def claim(self, worker: str) -> Job | None:
        """Take the oldest queued job for ``worker``; None when there is none."""
        for _ in range(8):
            with self._reads.connect() as conn:
                row = conn.execute(select(jobs.c.id).where(jobs.c.state == JobState.QUEUED.value)
                                   .order_by(jobs.c.created_at).limit(1)).first()
            if row is None:
                return None
            now = time.time()
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(jobs).where(jobs.c.id == row.id, jobs.c.state == JobState.QUEUED.value)
                    .values(state=JobState.RUNNING.value, attempts=jobs.c.attempts + 1, worker=worker,
                            started_at=now, updated_at=now, frames_done=0)
                ).rowcount
            if taken:
                return self.get(row.id)
        return None

    def _update_running(self, job: Job, **values: Any) -> bool:
        values.setdefault("updated_at", time.time())
        with self.engine.begin() as conn:
            return bool(conn.execute(
                update(jobs).where(jobs.c.id == job.id, jobs.c.state == JobState.RUNNING.value,
                                   jobs.c.attempts == job.attempts).values(**values)
            ).rowcount)

    def progress(self, job: Job, frames_done: int, frames_total: int | None) -> bool:
        return self._update_running(job, frames_done=frames_done, frames_total=frames_total)

    def finish(self, job: Job, result_key: str, stats: dict[str, Any]) -> bool:
        total = stats.get("frames")
        return self._update_running(job, state=JobState.DONE.value, result_key=result_key, stats=json.dumps(stats),
                                    finished_at=time.time(), frames_done=total or 0, frames_total=total)

    def fail(self, job: Job, failure: str, code: str, message: str) -> bool:
        state = JobState.CANCELLED if failure == "cancelled" else JobState.FAILED
        return self._update_running(job, state=state.value, failure=failure, error_code=code,
                                    error_message=message[:2000], finished_at=time.time())

    def cancel_requested(self, job_id: str) -> bool:
        """True once the job is to stop: cancelled, or ended meanwhile (another of its chunks failed it, or
        the sweep found it stalled), so its other chunks in progress stop at their next batch."""
        with self._reads.connect() as conn:
            row = conn.execute(select(jobs.c.cancel_requested, jobs.c.state).where(jobs.c.id == job_id)).first()
        return row is not None and (bool(row.cancel_requested) or JobState(row.state).finished)

    def cancel(self, job_id: str, workspace: str) -> tuple[Job, bool]:
        """Cancel a queued job now, or ask a running one to stop at its next batch (or, while it fetches
        its input URL, at the fetch's next look at the flag). True when this call ended a queued job (its
        webhook is then the caller's to send; a running one's is its worker's)."""
        job = self.get(job_id, workspace)
        now = time.time()
        with self.engine.begin() as conn:
            ended = conn.execute(update(jobs).where(jobs.c.id == job.id, jobs.c.state == JobState.QUEUED.value).values(
                state=JobState.CANCELLED.value, failure="cancelled", error_code="cancelled",
                error_message="cancelled before it started", finished_at=now, updated_at=now, cancel_requested=True)
            ).rowcount
            conn.execute(update(jobs).where(jobs.c.id == job.id, jobs.c.state == JobState.RUNNING.value)
                         .values(cancel_requested=True, updated_at=now))
        return self.get(job.id), bool(ended)

    # -- chunks (distributed mode) -------------------------------------------------------
    def claim_id(self, job_id: str, worker: str) -> Job | None:
        """Take this queued job (a planner's claim); None if it is no longer queued."""
        now = time.time()
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value)
                .values(state=JobState.RUNNING.value, attempts=jobs.c.attempts + 1, worker=worker,
                        started_at=now, updated_at=now, frames_done=0)
            ).rowcount
        return self.get(job_id) if taken else None

    def set_chunks(self, job: Job, chunks: list[tuple[int, int]], frames_total: int) -> bool:
        """Record the plan: one row per chunk ``(k_first, k_stop)``; replaces an earlier plan."""
        with self.engine.begin() as conn:
            ok = conn.execute(update(jobs).where(jobs.c.id == job.id, jobs.c.state == JobState.RUNNING.value,
                                                 jobs.c.attempts == job.attempts)
                              .values(frames_total=frames_total, frames_done=0, updated_at=time.time())).rowcount
            if not ok:
                return False
            conn.execute(delete(job_chunks).where(job_chunks.c.job_id == job.id))
            if chunks:
                conn.execute(insert(job_chunks), [
                    {"job_id": job.id, "idx": i, "k_first": a, "k_stop": b, "frames_done": 0, "done": False,
                     "runs": 0} for i, (a, b) in enumerate(chunks)])
        return True

    def chunks(self, job_id: str) -> list[dict[str, Any]]:
        with self._reads.connect() as conn:
            rows = conn.execute(select(job_chunks).where(job_chunks.c.job_id == job_id)
                                .order_by(job_chunks.c.idx)).all()
        return [{**r._mapping, "stats": json.loads(r.stats) if r.stats else {}} for r in rows]

    def chunk_started(self, job_id: str, idx: int, *, count: bool = True) -> None:
        """A chunk (re)starts from its first sample; ``count``: this is a new attempt, not an outage retry.
        Also the chunk's first heartbeat (the job's ``updated_at``; ``stalled``)."""
        with self.engine.begin() as conn:
            conn.execute(update(job_chunks).where(job_chunks.c.job_id == job_id, job_chunks.c.idx == idx)
                         .values(runs=job_chunks.c.runs + int(count), frames_done=0))
            conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value)
                         .values(updated_at=time.time()))

    def chunk_progress(self, job_id: str, idx: int, frames_done: int, *, done: bool = False,
                       stats: dict[str, Any] | None = None) -> bool:
        """Set one chunk's progress (and the job's sum); True when this made every chunk done."""
        values: dict[str, Any] = {"frames_done": frames_done}
        if done:
            values.update(done=True, stats=json.dumps(stats or {}))
        total = select(func.coalesce(func.sum(job_chunks.c.frames_done), 0)).where(
            job_chunks.c.job_id == job_id).scalar_subquery()
        with self.engine.begin() as conn:
            conn.execute(update(job_chunks).where(job_chunks.c.job_id == job_id, job_chunks.c.idx == idx,
                                                  job_chunks.c.done.is_(False)).values(**values))
            conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value)
                         .values(frames_done=total, updated_at=time.time()))
            if not done:
                return False
            left = conn.execute(select(func.count()).select_from(job_chunks).where(
                job_chunks.c.job_id == job_id, job_chunks.c.done.is_(False))).scalar()
        return left == 0

    def stalled(self, before: float, limit: int = 1000) -> list[str]:
        """Running distributed jobs silent since ``before`` (no chunk started or progressed, no plan
        recorded) that have a started, unfinished chunk or every chunk done (a merge): their worker hangs.
        One whose unfinished chunks all wait in the queue is not stalled, however long the queue."""
        started = select(job_chunks.c.job_id).where(job_chunks.c.job_id == jobs.c.id, job_chunks.c.runs > 0,
                                                    job_chunks.c.done.is_(False))
        unfinished = select(job_chunks.c.job_id).where(job_chunks.c.job_id == jobs.c.id,
                                                       job_chunks.c.done.is_(False))
        planned = select(job_chunks.c.job_id).where(job_chunks.c.job_id == jobs.c.id)
        with self._reads.connect() as conn:
            return list(conn.execute(select(jobs.c.id).where(
                jobs.c.state == JobState.RUNNING.value, jobs.c.updated_at < before, planned.exists(),
                or_(started.exists(), ~unfinished.exists())).limit(limit)).scalars())

    # -- recovery -----------------------------------------------------------------------
    def requeue_running(self, max_attempts: int, worker: str | None = None) -> tuple[int, int]:
        """Jobs whose worker died (all running ones, or ``worker``'s): back to the queue, or failed
        once they have had ``max_attempts``. Returns (requeued, failed)."""
        where = [jobs.c.state == JobState.RUNNING.value]
        if worker is not None:
            where.append(jobs.c.worker == worker)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(*where, jobs.c.cancel_requested.is_(True)).values(
                state=JobState.CANCELLED.value, failure="cancelled", error_code="cancelled",
                error_message="cancelled", finished_at=now, updated_at=now))
            failed = conn.execute(update(jobs).where(*where, jobs.c.attempts >= max_attempts).values(
                state=JobState.FAILED.value, failure="worker_lost", error_code="worker_lost",
                error_message=f"the worker running this job stopped {max_attempts} times; "
                              "the video may crash the decoder or exhaust memory",
                finished_at=now, updated_at=now)).rowcount
            requeued = conn.execute(update(jobs).where(*where).values(
                state=JobState.QUEUED.value, worker=None, updated_at=now, frames_done=0)).rowcount
        return requeued, failed


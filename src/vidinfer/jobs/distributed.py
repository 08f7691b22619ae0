"""The distributed engine: Celery over RabbitMQ, job state in the job store.

A submitted job becomes a ``plan`` task: it claims the job, makes its input
readable by every worker (an upload is already in the blob store; a fetched URL
is put there), probes it and splits it into chunks of samples, one ``chunk`` task
each. Every chunk writes its results to a deterministic key and marks itself done
in the store; whichever chunk completes the set merges them into the results file, then tracks and
counts over the merged samples when the job asked for it (so track ids run across chunk boundaries,
exactly as in a single pass).

Delivery is at least once (``acks_late`` with ``reject_on_worker_lost``: a killed
worker's task goes back to the queue), so every step is idempotent: a planner
finds the job already claimed (and, redelivered, sends the chunks no worker has
started, as its predecessor may have died before sending them), a redelivered chunk
overwrites its own output and progress, and a second merge writes the same file and
finds the job already done.
A chunk whose worker died ``max_attempts`` times (deliveries, not outage retries) fails the job
with ``worker_lost``, so a video that kills every worker that opens it cannot circulate forever.
Cancelling sets a flag that chunks read between batches, and the planner while it fetches an input URL.
Any other exception a step raises (a bug, a worker's fault) fails the job with ``internal_error``
naming the step, its traceback in the worker's log: Celery acknowledges a task that raised, so a job
left ``running`` would stay so. Chunks heartbeat through the job's ``updated_at`` (written when a chunk
starts and with its progress); the API's sweep fails a job whose started chunk, or whose merge, has
been silent for ``stall_seconds`` (a hung worker keeps its task unacknowledged, so RabbitMQ never
redelivers it) with ``worker_lost``.
Celery's result backend is not used: the API reads the job store.

A service that is down or restarting (``Unavailable``: the database, the broker, the object storage)
never fails a job by itself: the step that met it waits (1, 2, 4 ... 30 s) and runs again, which its
idempotence allows; progress writes and cancel checks that meet a database outage are skipped, so a
chunk's inference goes on through it. Only the object storage and the broker have a limit,
``outage_seconds``, after which the job fails with ``service_unavailable`` and the reason; without the
database no outcome could be recorded, so workers wait for it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from vidinfer.config import Settings
from vidinfer.core.chunks import merge_results, plan_chunks
from vidinfer.core.pipeline import Progress, expected_samples
from vidinfer.core.sampling import check_infer_fps, parse_fps
from vidinfer.core.video import probe
from vidinfer.errors import Cancelled, Unavailable, VidinferError
from vidinfer.inference import run_inference
from vidinfer.jobs import notify
from vidinfer.jobs.runner import Runner, analyse_results, result_key
from vidinfer.jobs.states import JobState, failure_kind
from vidinfer.jobs.store import Job, JobStore

log = logging.getLogger(__name__)

PLAN = "vidinfer.plan"
CHUNK = "vidinfer.chunk"
#: the longest wait between two tries of a step that met an outage
MAX_BACKOFF = 30.0


def make_celery(settings: Settings) -> Celery:
    """The Celery app for ``settings``: the same in the API (to send) and in workers (to run)."""
    app = Celery("vidinfer", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # a send to a broker that is down gives up within seconds (the API's sweep or a step's retry
        # sends again), instead of holding a request or a worker
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 1.0},
    )
    app.conf.task_routes = {PLAN: {"queue": settings.queue}, CHUNK: {"queue": settings.queue}}
    engine = _Engine(settings)

    @app.task(name=PLAN, bind=True)
    def plan(task, job_id: str) -> None:  # noqa: ANN001 - Celery's bound task
        redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
        engine.ride_out(job_id, lambda: engine.plan(app, job_id, redelivered=redelivered), "the plan step")

    @app.task(name=CHUNK)
    def chunk(job_id: str, idx: int) -> None:
        delivery = Delivery()  # counted once, however often an outage makes ride_out repeat the step
        engine.ride_out(job_id, lambda: engine.chunk(job_id, idx, delivery), f"chunk {idx}")

    return app


def send(app: Celery, name: str, *args: object) -> None:
    """Send one task; a broker that cannot be reached raises ``Unavailable`` (``broker_unavailable``)."""
    try:
        app.send_task(name, args=list(args))
    except (BrokerError, OSError) as exc:
        raise Unavailable(f"the message broker is unreachable ({exc})", code="broker_unavailable") from None


def dispatch(app: Celery, job_id: str) -> None:
    """Hand a queued job to the workers (``Unavailable`` if the broker is down: the job stays queued
    in the store, and ``redispatch_stale`` sends it once the broker is back)."""
    send(app, PLAN, job_id)


def redispatch_stale(app: Celery, store: JobStore, older_than: float = 30.0) -> int:
    """Dispatch again jobs still queued after ``older_than`` seconds (the API may have died between
    saving a job and sending it; a duplicate plan finds the job claimed and does nothing)."""
    ids = store.queued_before(time.time() - older_than)
    for job_id in ids:
        dispatch(app, job_id)
    return len(ids)


def fail_stalled(store: JobStore, settings: Settings) -> int:
    """Fail with ``worker_lost`` the running jobs whose started chunk (or merge) has written nothing for
    ``settings.stall_seconds``: its worker hangs, and holds the task, which RabbitMQ then never redelivers.
    Chunks still waiting in the queue do not count: a long queue is not a stall."""
    ended = 0
    for job_id in store.stalled(time.time() - settings.stall_seconds):
        job = store.get(job_id)
        message = (f"the job's worker made no progress for {settings.stall_seconds:.0f} s (VIDINFER_STALL_SECONDS): "
                   "it may hang on this video")
        if store.fail(job, "worker_lost", "worker_lost", message):
            log.warning("job %s worker_lost: %s", job.id, message)
            ended += 1
            from vidinfer.storage import open_store

            notify.job_ended(store.get(job.id), settings, open_store(settings))
    return ended


@contextmanager
def unexpected(job_id: str, step: str) -> Iterator[None]:
    """Turn an exception that is neither an outage nor a known failure into an ``internal_error`` that
    names ``step``; its traceback goes to the worker's log, never to the client."""
    try:
        yield
    except (Unavailable, VidinferError):
        raise
    except Exception as exc:
        log.exception("job %s: %s failed unexpectedly", job_id, step)
        raise VidinferError(f"{step} failed unexpectedly ({type(exc).__name__}); the worker's log has the "
                            "details", code="internal_error") from None


def input_key(job: Job) -> str:
    return f"inputs/{job.workspace}/{job.id}/input"


def chunk_key(job: Job, idx: int) -> str:
    return f"chunks/{job.workspace}/{job.id}/{idx}.json"


@dataclass
class Delivery:
    """One delivery of a chunk task: whether its start has been counted in the chunk's ``runs``."""

    counted: bool = False


class _Engine:
    """Per worker process: the runner's parts, built on first use (after the fork)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner: Runner | None = None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def runner(self) -> Runner:
        if self._runner is None or self._runner_pid != os.getpid():
            from vidinfer.jobs.store import JobStore
            from vidinfer.models.registry import ModelRegistry
            from vidinfer.storage import open_store

            self._runner = Runner(self.settings, JobStore(self.settings.database), open_store(self.settings),
                                  ModelRegistry.from_settings(self.settings))
            self._runner_pid = os.getpid()
            self.worker = f"{socket.gethostname()}:{os.getpid()}"
        return self._runner

    _runner_pid = -1

    # -- outages -----------------------------------------------------------------------
    def ride_out(self, job_id: str, step: Callable[[], None], name: str) -> None:
        """Run ``step`` (called ``name`` in messages) until it gets through the outages it meets; a failure
        it did not record itself, or any other exception, ends the job (see the module's docstring)."""
        since = time.monotonic()
        tries = 0
        while True:
            try:
                with unexpected(job_id, name):
                    step()
                return
            except Unavailable as exc:
                waited = time.monotonic() - since
                if exc.code != "database_unavailable" and waited >= self.settings.outage_seconds:
                    if self._give_up(job_id, exc, waited):
                        return
                delay = min(MAX_BACKOFF, 2.0 ** tries)
                tries += 1
                log.warning("job %s: %s; trying again in %.0f s (%.0f s so far)", job_id, exc.message, delay, waited)
                time.sleep(delay)
            except VidinferError as exc:  # not recorded by the step (a bug's internal_error, say)
                wait = 1.0
                while not self._end(job_id, exc):  # the database is down: wait for it, as every step does
                    time.sleep(wait)
                    wait = min(MAX_BACKOFF, wait * 2)
                return

    def _give_up(self, job_id: str, exc: Unavailable, waited: float) -> bool:
        """Fail the job after an outage of ``waited`` seconds; False if even that cannot be written."""
        return self._end(job_id, Unavailable(f"{exc.message}, for {waited:.0f} s: submit the job again once it "
                                             "is back", code=exc.code))

    def _end(self, job_id: str, exc: VidinferError) -> bool:
        """Fail the job with ``exc`` if it still runs; False if that cannot be written (database outage)."""
        try:
            job = self.runner.store.get(job_id)
            if job.state is JobState.RUNNING:
                self._fail(job, exc)
            return True
        except Unavailable:
            return False

    def _progress(self, job_id: str, idx: int) -> Callable[[Progress], None]:
        """Chunk progress for the store; skipped, not fatal, while the database is unreachable."""
        def report(p: Progress) -> None:
            try:
                self.runner.store.chunk_progress(job_id, idx, p.samples_done)
            except Unavailable as exc:
                log.warning("job %s chunk %d: progress not recorded: %s", job_id, idx, exc.message)

        return report

    def _cancel_check(self, job: Job) -> Callable[[], bool]:
        """The runner's cancel check, read as "not cancelled" while the database is unreachable."""
        check = self.runner.cancel_check(job)

        def cancelled() -> bool:
            try:
                return check()
            except Unavailable:
                return False

        return cancelled

    # -- plan ---------------------------------------------------------------------------
    def plan(self, app: Celery, job_id: str, *, redelivered: bool = False) -> None:
        """Claim the job, probe its input, record its chunks, send one task each.

        A plan that finds the chunks recorded was either sent twice (the API's sweep: it
        does nothing) or ``redelivered`` because its planner died, maybe before sending
        every chunk: it sends the chunks no worker has started. One that a worker started
        and lost comes back by itself.
        """
        store = self.runner.store
        job = store.claim_id(job_id, self.worker)
        if job is None:
            current = store.get(job_id)
            if current.state is not JobState.RUNNING:
                return  # finished or cancelled
            recorded = store.chunks(job_id)
            if recorded:
                if redelivered:
                    unstarted = [c["idx"] for c in recorded if not c["done"] and not c["runs"]]
                    self.ride_out(job_id, lambda: [send(app, CHUNK, job_id, idx) for idx in unstarted],
                                  "the plan step")
                    log.info("job %s: plan redelivered, %d unstarted chunks sent again", job_id, len(unstarted))
                return
            job = current  # the planner died between its claim and its plan: plan again
        try:
            self.runner.resolve(job, {})  # the job fails before any decoding only if no model loads
            with self._local_input(job) as path:
                info = probe(str(path))
            fps = parse_fps(job.infer_fps)
            check_infer_fps(fps, info.max_infer_fps)
            total = expected_samples(info, fps)
            chunks = plan_chunks(total, fps, self.settings.chunk_seconds)
        except Unavailable:
            raise
        except VidinferError as exc:
            self._fail(job, exc)
            return
        if store.set_chunks(job, [(c.k_first, c.k_stop) for c in chunks], total):
            # the plan is recorded: from here a broker outage retries the sends, not the plan (a plan
            # run again would find the chunks recorded)
            self.ride_out(job.id, lambda: [send(app, CHUNK, job.id, c.index) for c in chunks], "the plan step")
            log.info("job %s: %d samples in %d chunks", job.id, total, len(chunks))

    # -- chunks -------------------------------------------------------------------------
    def chunk(self, job_id: str, idx: int, delivery: Delivery | None = None) -> None:
        """Run one chunk; a chunk whose deliveries died ``max_attempts`` times fails the job.

        A worker killed mid-chunk (by the video, say, exhausting memory) gets the chunk
        redelivered; without a cap such a chunk would be redelivered forever and the job
        never end. ``delivery`` keeps the retries of one delivery through an outage from
        counting as more attempts.
        """
        delivery = delivery or Delivery()
        store = self.runner.store
        job = store.get(job_id)
        if job.state is not JobState.RUNNING:
            return
        row = next((c for c in store.chunks(job_id) if c["idx"] == idx), None)
        if row is None:
            return  # a chunk of an older plan
        if row["done"]:
            self._merge_if_complete(job)
            return
        if job.cancel_requested:
            self._fail(job, Cancelled("the job was cancelled"))
            return
        if not delivery.counted and row["runs"] >= self.settings.max_attempts:
            message = (f"chunk {idx} was started {row['runs']} times and its worker died each time "
                       "(VIDINFER_MAX_ATTEMPTS): the video may crash the decoder or exhaust the worker's memory")
            if store.fail(job, "worker_lost", "worker_lost", message):
                log.warning("job %s worker_lost: %s", job.id, message)
                notify.job_ended(store.get(job.id), self.settings, self.runner.blobs)
            return
        store.chunk_started(job_id, idx, count=not delivery.counted)
        delivery.counted = True
        try:
            unloadable: dict[str, str] = {}
            runs = self.runner.resolve(job, unloadable)
            with self._local_input(job) as path:
                out = run_inference(
                    str(path), runs, parse_fps(job.infer_fps),
                    batch_size=self.settings.batch_size, decode_threads=self.settings.decode_threads,
                    on_progress=self._progress(job_id, idx),
                    should_cancel=self._cancel_check(job), k_range=(row["k_first"], row["k_stop"]),
                    unloadable=unloadable, skip_static=job.options.get("skip_static"),
                )
        except Unavailable:
            raise
        except VidinferError as exc:
            self._fail(job, exc)
            return
        self.runner.blobs.put_bytes(chunk_key(job, idx), json.dumps(out.results_json, separators=(",", ":")).encode())
        result = out.result
        stats = {"frames": len(result), "null_frames": result.failed_frames, "partial": result.partial,
                 "warnings": result.warnings[:5], "video": self.runner.video_stats(out.info)}
        if store.chunk_progress(job_id, idx, len(result), done=True, stats=stats):
            self._merge_if_complete(job)

    def _merge_if_complete(self, job: Job) -> None:
        store = self.runner.store
        chunks = store.chunks(job.id)
        if not chunks or not all(c["done"] for c in chunks):
            return
        with unexpected(job.id, "the merge"):
            self._merge(job, chunks)

    def _merge(self, job: Job, chunks: list[dict]) -> None:
        """Merge the chunks' results into the job's results file and finish the job."""
        store = self.runner.store
        parts = [json.loads(self.runner.blobs.get_bytes(chunk_key(job, c["idx"]))) for c in chunks]
        merged = analyse_results(job, merge_results(parts))  # tracking runs once, over every chunk's samples
        self.runner.blobs.put_bytes(result_key(job), json.dumps(merged, separators=(",", ":")).encode())
        stats = [c["stats"] for c in chunks]
        summary = {
            "frames": len(merged["frame_offset"]), "null_frames": sum(s.get("null_frames", 0) for s in stats),
            "partial": any(s.get("partial") for s in stats),
            "warnings": [w for s in stats for w in s.get("warnings", [])][:20],
            "chunks": len(chunks), "chunk_runs": sum(c["runs"] for c in chunks), "video": stats[0].get("video"),
        }
        if store.finish(job, result_key(job), summary):
            log.info("job %s: merged %d chunks", job.id, len(chunks))
            notify.job_ended(store.get(job.id), self.settings, self.runner.blobs)

    def _fail(self, job: Job, exc: VidinferError) -> None:
        kind = failure_kind(exc)
        if self.runner.store.fail(job, kind, exc.code, exc.message):
            log.info("job %s %s: %s", job.id, kind, exc.message)
            notify.job_ended(self.runner.store.get(job.id), self.settings, self.runner.blobs)

    # -- input ----------------------------------------------------------------------------
    @contextmanager
    def _local_input(self, job: Job) -> Iterator[Path]:
        """The job's input as a local file. An input from a URL is fetched once, by the planner,
        and put in the blob store for every chunk's worker to read."""
        blobs = self.runner.blobs
        with tempfile.TemporaryDirectory(prefix="vidinfer-input-") as tmp:
            if blobs.key_from_url(job.input_url) is not None:
                with self.runner.input_file(job, Path(tmp)) as path:  # an upload: read in place
                    yield path
                return
            key = input_key(job)
            if not blobs.exists(key):
                with self.runner.input_file(job, Path(tmp), self._cancel_check(job)) as fetched:
                    blobs.put_file(key, fetched)
            with blobs.local_copy(key) as path:
                yield path

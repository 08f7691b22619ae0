"""Running one job: fetch its input, run its models, store its results, record the outcome.

The same ``run_inference`` as the local CLI does the work, so a job's results
are exactly what ``vidinfer infer`` gives for the same request.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from vidinfer.config import Settings
from vidinfer.core.pipeline import ModelRun, Progress, expected_samples
from vidinfer.core.video import VideoInfo
from vidinfer.core.sampling import parse_fps
from vidinfer.core.tracking import AnalysisOptions, analyse
from vidinfer.errors import InvalidInput, ModelError, StorageFull, VidinferError
from vidinfer.fetch import UrlPolicy, fetch_to_file
from vidinfer.inference import ModelRequest, check_analysis, resolve_runs, run_inference
from vidinfer.jobs import notify
from vidinfer.jobs.requests import check_own_upload, model_spec
from vidinfer.jobs.states import failure_kind
from vidinfer.jobs.store import Job, JobStore
from vidinfer.models.registry import BUILTINS, ModelRegistry
from vidinfer.storage.base import BlobStore

log = logging.getLogger(__name__)

#: seconds between progress writes and between cancel checks
PROGRESS_EVERY = 0.5
CANCEL_EVERY = 1.0
#: longest wait between two tries to record a job's end while the job database's disk is full
RECORD_RETRY_MAX = 5.0


def result_key(job: Job) -> str:
    return f"results/{job.workspace}/{job.id}.json"


def analyse_results(job: Job, results: dict) -> dict:
    """Tracking and counting, when the job asked for them, over the whole results (in place): after a
    single pass, and after a distributed job's merge, so track ids run across chunk boundaries."""
    return analyse(results, AnalysisOptions.from_dict(job.options), float(parse_fps(job.infer_fps)))


@dataclass
class Runner:
    """Everything a worker process needs to run jobs; models stay loaded in ``registry``."""

    settings: Settings
    store: JobStore
    blobs: BlobStore
    registry: ModelRegistry
    #: a worker whose parent died stops at the next batch instead of running on as an orphan
    alive: Callable[[], bool] = lambda: True

    def run(self, job: Job) -> None:
        """Run ``job`` (already claimed) to its end: done, failed or cancelled; never raises."""
        try:
            stats = self._execute(job)
        except VidinferError as exc:
            kind = failure_kind(exc)
            log.info("job %s %s: %s", job.id, kind, exc.message)
            self._record(job, lambda: self.store.fail(job, kind, exc.code, exc.message))
        except Exception as exc:  # a bug: keep the worker alive; the traceback to the log, not the client
            log.exception("job %s failed unexpectedly", job.id)
            message = f"the job failed unexpectedly ({type(exc).__name__}); the worker's log has the details"
            self._record(job, lambda: self.store.fail(job, "internal_error", "internal_error", message))
        else:
            self._record(job, lambda: self.store.finish(job, result_key(job), stats))
        notify.job_ended(self.store.get(job.id), self.settings, self.blobs)

    def _record(self, job: Job, write: Callable[[], object]) -> None:
        """Record the job's end, waiting while the database's disk is full: a worker that crashed here
        would be restarted to run the job again into the same full disk, and a job left "running" by a
        live worker would never be requeued."""
        wait = 0.5
        while True:
            try:
                write()
                return
            except StorageFull as exc:
                log.warning("job %s: cannot record its end yet (%s); retrying in %.1f s", job.id, exc.message, wait)
            if not self.alive():
                raise SystemExit("the server that started this worker is gone")
            time.sleep(wait)
            wait = min(RECORD_RETRY_MAX, wait * 2)

    def resolve(self, job: Job, unloadable: dict[str, str] | None = None) -> list[ModelRun]:
        """The job's models, loaded (once per process) with their params checked; with ``unloadable``,
        a model that cannot load here is left out and named there (``resolve_runs``)."""
        names = {e.name for e in self.registry.entries()}
        requests, first_error = [], None
        for m in job.models:
            try:
                spec = model_spec(names, set(BUILTINS), job.workspace, m["model_id"], m["model_version"])
            except ModelError as exc:  # unregistered since the API accepted the job
                if unloadable is None:
                    raise
                log.warning("job %s: model %s is no longer registered: %s", job.id, m["model_id"], exc.message)
                unloadable[m["model_id"]] = exc.code
                first_error = first_error or exc
                continue
            requests.append(ModelRequest(m["model_id"], spec, m["inference_params"]))
        if first_error is not None and not requests:
            raise first_error
        runs = resolve_runs(self.registry, requests, unloadable)
        check_analysis(runs, AnalysisOptions.from_dict(job.options))
        return runs

    def _execute(self, job: Job) -> dict:
        unloadable: dict[str, str] = {}
        runs = self.resolve(job, unloadable)
        fps = parse_fps(job.infer_fps)
        with tempfile.TemporaryDirectory(prefix="vidinfer-job-") as tmp, self.input_file(job, Path(tmp)) as path:
            out = run_inference(
                str(path), runs, fps,
                batch_size=self.settings.batch_size, decode_threads=self.settings.decode_threads,
                on_probe=lambda info: self.store.progress(job, 0, expected_samples(info, fps)),
                on_progress=self._progress(job), should_cancel=self.cancel_check(job), unloadable=unloadable,
                skip_static=job.options.get("skip_static"),
            )
        data = json.dumps(analyse_results(job, out.results_json), separators=(",", ":")).encode()
        self.blobs.put_bytes(result_key(job), data)
        result = out.result
        return {
            "frames": len(result), "null_frames": result.failed_frames, "partial": result.partial,
            "warnings": result.warnings[:20], "wall_seconds": result.stats.get("wall_seconds"),
            "video": self.video_stats(out.info),
        }

    @staticmethod
    def video_stats(info: VideoInfo) -> dict:
        return {"width": info.width, "height": info.height, "fps": float(info.fps),
                "duration": float(info.duration) if info.duration is not None else None}

    @contextmanager
    def input_file(self, job: Job, tmp: Path, should_cancel: Callable[[], bool] | None = None) -> Iterator[Path]:
        """The job's input as a local file: an upload of its own workspace, an s3:// object, or an
        http(s) URL fetched into ``tmp`` (with the address checks of ``VIDINFER_URL_ALLOWLIST``, the
        deadline and minimum rate of the settings, and stopped at once by a cancel: ``should_cancel``,
        the job's cancel check by default).

        Errors raised while the file is in use name the input as the user knows it, never the
        server's own path."""
        with self._fetch_input(job, tmp, should_cancel or self.cancel_check(job)) as path:
            try:
                yield path
            except VidinferError as exc:
                shown = Path(urlsplit(job.input_url).path).name or "the input"
                exc.message = exc.message.replace(str(path), shown)
                exc.args = (exc.message,)
                raise

    @contextmanager
    def _fetch_input(self, job: Job, tmp: Path, should_cancel: Callable[[], bool]) -> Iterator[Path]:
        key = self.blobs.key_from_url(job.input_url)
        limit = self.settings.max_upload_bytes  # presigned S3 PUTs cannot enforce it: refused here
        if key is not None:
            with self.blobs.local_copy(check_own_upload(key, job.workspace), max_bytes=limit) as path:
                yield path
            return
        if job.input_url[:5].lower() == "s3://":
            from vidinfer.storage.s3 import s3_url_copy

            with s3_url_copy(job.input_url, self.settings, max_bytes=limit) as path:
                yield path
            return
        if job.input_url.lower().startswith(("http://", "https://")):
            settings = self.settings
            yield fetch_to_file(job.input_url, tmp / "input", policy=UrlPolicy.from_allowlist(settings.url_allowlist),
                                max_bytes=settings.max_upload_bytes, timeout=settings.fetch_timeout,
                                min_rate=settings.fetch_min_rate, rate_window=settings.fetch_rate_window,
                                should_cancel=should_cancel)
            return
        raise InvalidInput(f"input_url must be an http(s) URL, got {job.input_url[:200]!r}", code="invalid_url")

    def _progress(self, job: Job) -> Callable[[Progress], None]:
        last = [0.0]

        def report(p: Progress) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or p.samples_done >= p.samples_total:
                last[0] = now
                self.store.progress(job, p.samples_done, p.samples_total)

        return report

    def cancel_check(self, job: Job) -> Callable[[], bool]:
        """Polled between batches and while the input is fetched: True once the job is cancelled (read at
        most once a second)."""
        last = [time.monotonic()]

        def check() -> bool:
            if not self.alive():
                raise SystemExit("the server that started this worker is gone")
            now = time.monotonic()
            if now - last[0] < CANCEL_EVERY:
                return False
            last[0] = now
            return self.store.cancel_requested(job.id)

        return check


def parent_alive(parent_pid: int) -> Callable[[], bool]:
    return lambda: os.getppid() == parent_pid

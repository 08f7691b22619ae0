"""The fault-injection harness (issue 7): a batch of jobs over the real HTTP API while faults are injected.

``run_batch`` submits ``n`` small jobs (built-in ``coco`` on a few short photo clips), spread over a
submit window, while a ``FaultInjector`` thread injects faults (a SIGKILL, a service restart, ...) at
random intervals. Every call rides out an API that is down (transport errors and 5xx are retried until
the deadline; a submission is retried with the same ``Idempotency-Key``, so a retry never makes a second
job). Each job is polled to its end; each finished job's results file is downloaded, parsed and compared
with a reference computed once in this process with no fault (the per-model prediction lists,
``frame_offset`` and ``time_offset``; per-frame ``time`` ignored). The report says:

    kills       faults injected, by kind (and the ones that could not be injected)
    submitted   jobs the API accepted
    finished    ended with status 0 and results equal to the reference
    failed      ended with a failure status; by error code, with each job's message
    lost        never ended by the deadline, or vanished (404) — target 0
    mismatched  finished, but its results differ from the reference — target 0
    corrupt     finished, but its results file does not parse or is not a results file — target 0
    duplicates  jobs in the workspace's list that no submission asked for — target 0

Used by ``bench_faults.py`` (process kills, disk full) and by the infrastructure-fault benchmark
(database, broker and storage restarts): each builds its servers and its list of ``Fault`` and calls
``run_batch``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench_scale import loadavg, without_timings
from videos import PHOTOS, photo_clip

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]
#: every setting a fault run needs on its servers: no rate limit on polls, a fixed signing secret
SERVER_ENV = {"VIDINFER_STATUS_RATE_PER_MINUTE": "1000000", "VIDINFER_SECRET_KEY": "bench-faults-secret"}
#: statuses worth retrying: the API (or a service behind it) is restarting
RETRY_STATUS = frozenset({500, 502, 503, 504})


# -- videos and the reference ---------------------------------------------------------------
def videos(count: int = 3, seconds: int = 4) -> list[Path]:
    """``count`` different short clips (cached), one per photo."""
    return [photo_clip(name, seconds=seconds) for name in PHOTOS[:count]]


def reference(paths: list[Path], infer_fps: float) -> dict[str, dict]:
    """Each video's results with no fault, by file name: the embedded engine in this process, one pass
    (what a job gives, in either mode: distributed chunks merge to the same results)."""
    from vidinfer.inference import ModelRequest, resolve_runs, run_inference
    from vidinfer.models.registry import ModelRegistry

    runs = resolve_runs(ModelRegistry(), [ModelRequest("coco", "coco")])
    fps = Fraction(infer_fps).limit_denominator(1000)
    return {p.name: without_timings(run_inference(str(p), runs, fps).results_json) for p in paths}


# -- faults ---------------------------------------------------------------------------------
@dataclass
class Fault:
    """One kind of fault: ``inject`` does it and returns False when it could not (nothing to kill)."""

    name: str
    inject: Callable[[], bool]
    weight: float = 1.0
    #: at most this many injections in a run (None: no limit)
    limit: int | None = None


class FaultInjector:
    """Injects a random ``Fault`` every ``interval`` (min, max) seconds in a thread, until stopped or
    ``max_total`` faults are in (a cap keeps a run's length bounded and its failures meaningful: a job
    killed ``VIDINFER_MAX_ATTEMPTS`` times fails with ``worker_lost`` by design)."""

    def __init__(self, faults: list[Fault], interval: tuple[float, float] = (2.0, 5.0), seed: int = 7,
                 max_total: int | None = None) -> None:
        self.faults = faults
        self.interval = interval
        self.max_total = max_total
        self.rng = random.Random(seed)
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()  # chosen, but nothing to inject it on
        self.errors: list[str] = []
        self.last_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-injector", daemon=True)

    def start(self) -> FaultInjector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(*self.interval)):
            open_ = [f for f in self.faults if f.limit is None or self.done[f.name] < f.limit]
            if not open_ or (self.max_total is not None and sum(self.done.values()) >= self.max_total):
                return
            fault = self.rng.choices(open_, weights=[f.weight for f in open_])[0]
            try:
                injected = fault.inject()
            except Exception as exc:  # noqa: BLE001 - recorded in the report; the run goes on
                self.errors.append(f"{fault.name}: {type(exc).__name__}: {exc}"[:500])
                continue
            if injected:
                self.done[fault.name] += 1
                self.last_at = time.monotonic()
                print(f"  [{time.strftime('%H:%M:%S')}] fault: {fault.name}", flush=True)
            else:
                self.skipped[fault.name] += 1

    def summary(self) -> dict[str, Any]:
        return {"total": sum(self.done.values()), "by_kind": dict(self.done), "skipped": dict(self.skipped),
                "errors": self.errors[:20]}


def sigkill(pid: int) -> bool:
    """SIGKILL one process; False if it was already gone."""
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def children(pid: int, marker: str) -> list[psutil.Process]:
    """The live children of ``pid`` whose command line holds ``marker``."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for proc in procs:
        try:
            if marker in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


# -- the client -----------------------------------------------------------------------------
class Client:
    """The API as a patient client sees it: every call retried while the server is down or restarting."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.http = httpx.Client(timeout=30)
        self.retries = 0

    def call(self, method: str, path_or_url: str, deadline: float, **kwargs: Any) -> httpx.Response | None:
        """The first answer that is not a transport error or a 5xx; None if the deadline passes first."""
        url = path_or_url if path_or_url.startswith("http") else self.url + path_or_url
        params = kwargs.pop("params", {}) if not path_or_url.startswith("http") else None
        if params is not None:
            kwargs["params"] = {"api_key": self.key, **params}
        while time.monotonic() < deadline:
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code not in RETRY_STATUS:
                return response
            self.retries += 1
            time.sleep(0.5)
        return None

    def submit(self, input_url: str, infer_fps: float, deadline: float) -> str | None:
        """Submit with an ``Idempotency-Key``: retried after a crash, it returns the same job."""
        idem = uuid.uuid4().hex
        response = self.call("POST", "/videoinfer", deadline, headers={"Idempotency-Key": idem},
                             json={"input_url": input_url, "infer_fps": infer_fps, "models": MODELS})
        if response is None or response.status_code != 200:
            return None
        return response.json()["job_id"]

    def close(self) -> None:
        self.http.close()


# -- the batch ------------------------------------------------------------------------------
@dataclass
class JobRecord:
    """One submitted job as the client followed it."""

    job_id: str
    video: str
    submitted_at: float
    status: dict[str, Any] | None = None
    ended_at: float | None = None
    vanished: bool = False
    verdict: str = "pending"  # finished | failed | lost | mismatched | corrupt
    detail: str = ""
    polls: int = field(default=0, repr=False)


def run_batch(client: Client, uploads: dict[str, str], expected: dict[str, dict], *, jobs: int,
              infer_fps: float, faults: FaultInjector | None = None, submit_every: float = 0.5,
              settle_s: float = 240.0, poll_every: float = 1.0) -> dict[str, Any]:
    """Submit ``jobs`` jobs (round-robin over ``uploads``: video name -> input URL) every ``submit_every``
    seconds, inject ``faults`` while any job is unfinished, poll every job to its end, then check each
    finished job's results against ``expected``. A job that has not ended ``settle_s`` seconds after the
    last submission and the last fault (whichever is later) is lost."""
    started = time.monotonic()
    load_before = loadavg()
    records: list[JobRecord] = []
    submit_failed = 0
    names = sorted(uploads)
    if faults is not None:
        faults.start()
    try:
        for i in range(jobs):
            name = names[i % len(names)]
            job_id = client.submit(uploads[name], infer_fps, time.monotonic() + 120)
            if job_id is None:
                submit_failed += 1
            else:
                records.append(JobRecord(job_id, name, time.monotonic()))
            time.sleep(submit_every)
        _poll_until_ended(client, records, faults, settle_s, poll_every)
    finally:
        if faults is not None:
            faults.stop()
    for record in records:
        _judge(client, record, expected[record.video])
    listed = _listed_ids(client)
    ids = {r.job_id for r in records}
    verdicts = Counter(r.verdict for r in records)
    failures = [r for r in records if r.verdict == "failed"]
    turnaround = [r.ended_at - r.submitted_at for r in records if r.ended_at is not None]
    return {
        "kills": faults.summary() if faults is not None else {"total": 0, "by_kind": {}},
        "submitted": len(records),
        "submit_failed": submit_failed,
        "finished": verdicts["finished"],
        "failed": {"count": len(failures),
                   "by_code": dict(Counter((r.status or {}).get("error", {}).get("code", "?") for r in failures)),
                   "jobs": [{"job_id": r.job_id, "detail": r.detail} for r in failures][:20]},
        "lost": {"count": verdicts["lost"], "jobs": [{"job_id": r.job_id, "detail": r.detail}
                                                     for r in records if r.verdict == "lost"][:20]},
        "mismatched": {"count": verdicts["mismatched"],
                       "jobs": [r.job_id for r in records if r.verdict == "mismatched"][:20]},
        "corrupt": {"count": verdicts["corrupt"], "jobs": [{"job_id": r.job_id, "detail": r.detail}
                                                           for r in records if r.verdict == "corrupt"][:20]},
        "duplicates": sorted(listed - ids) if listed is not None else None,
        "attempts": dict(Counter(str((r.status or {}).get("attempts")) for r in records)),
        "turnaround_s": {"median": round(statistics.median(turnaround), 2), "max": round(max(turnaround), 2)}
        if turnaround else None,
        "client_retries": client.retries,
        "wall_s": round(time.monotonic() - started, 1),
        "loadavg": {"before": load_before, "after": loadavg()},
    }


def _poll_until_ended(client: Client, records: list[JobRecord], faults: FaultInjector | None, settle_s: float,
                      poll_every: float) -> None:
    last_submit = max((r.submitted_at for r in records), default=time.monotonic())
    while True:
        pending = [r for r in records if r.ended_at is None and not r.vanished]
        if not pending:
            return
        if faults is not None and faults.last_at is not None:
            cutoff = max(last_submit, faults.last_at) + settle_s
        else:
            cutoff = last_submit + settle_s
        if time.monotonic() > cutoff:
            return
        for record in pending:
            response = client.call("GET", "/videoinfer", min(cutoff, time.monotonic() + 60),
                                   params={"job_id": record.job_id})
            record.polls += 1
            if response is None:
                continue
            if response.status_code == 404:
                record.vanished = True
                continue
            if response.status_code != 200:
                continue
            status = response.json()
            record.status = status
            if status["status"] != 1:
                record.ended_at = time.monotonic()
        if faults is not None and all(r.ended_at is not None or r.vanished for r in records):
            faults.stop()  # every job has ended: no fault can touch this batch any more
        time.sleep(poll_every)


def _judge(client: Client, record: JobRecord, expected: dict) -> None:
    """The job's verdict: finished (results equal the reference), failed, lost, mismatched or corrupt."""
    if record.vanished:
        record.verdict, record.detail = "lost", "the job vanished (404)"
        return
    status = record.status
    if record.ended_at is None or status is None:
        state = status["state"] if status else "never read"
        record.verdict, record.detail = "lost", f"not ended by the deadline (last state: {state})"
        return
    if status["status"] != 0:
        error = status.get("error") or {}
        record.verdict = "failed"
        record.detail = f"status {status['status']} {error.get('code')}: {error.get('message', '')[:300]}"
        return
    response = client.call("GET", status["output_signed_url"], time.monotonic() + 60)
    if response is None or response.status_code != 200:
        record.verdict = "corrupt"
        record.detail = f"results not downloadable ({response.status_code if response else 'no answer'})"
        return
    try:
        results = response.json()
        comparable = without_timings(results)
    except (ValueError, TypeError, AttributeError) as exc:
        record.verdict, record.detail = "corrupt", f"results do not parse: {exc}"[:300]
        return
    if comparable != expected:
        record.verdict = "mismatched"
        record.detail = f"keys {sorted(results)}; frames {len(results.get('frame_offset', []))}"
        return
    record.verdict = "finished"


def _listed_ids(client: Client) -> set[str] | None:
    response = client.call("GET", "/videoinfers", time.monotonic() + 60, params={"limit": 1000})
    if response is None or response.status_code != 200:
        return None
    return {j["job_id"] for j in response.json()["jobs"]}


# -- the scripts' options and report -------------------------------------------------------------
def batch_arguments(parser: argparse.ArgumentParser, *, max_interval: float) -> None:
    """The options every fault benchmark takes: the batch, the workers, the faults' spacing, the chunks."""
    parser.add_argument("--jobs", type=int, default=40, help="jobs per run")
    parser.add_argument("--fps", type=float, default=5.0, help="infer_fps of each job")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (embedded: pool workers)")
    parser.add_argument("--min-interval", type=float, default=3.0, help="seconds between faults, at least")
    parser.add_argument("--max-interval", type=float, default=max_interval, help="seconds between faults, at most")
    parser.add_argument("--chunk-seconds", type=float, default=2.0, help="VIDINFER_CHUNK_SECONDS (distributed)")
    parser.add_argument("--no-write", action="store_true", help="print the report only")


def report_line(mode: str, r: dict[str, Any]) -> str:
    """One line of the report: what ``bench/README.md``'s tables show."""
    return (f"{mode:12} kills {r['kills']['total']:3} {r['kills']['by_kind']}  submitted {r['submitted']}  "
            f"finished {r['finished']}  failed {r['failed']['count']} {r['failed']['by_code']}  "
            f"lost {r['lost']['count']}  mismatched {r['mismatched']['count']}  corrupt {r['corrupt']['count']}  "
            f"duplicates {len(r['duplicates'] or [])}  load {r['loadavg']['before']} -> {r['loadavg']['after']}")


def ok(r: dict[str, Any]) -> bool:
    """Every job ended, finished with the reference results or failed with a reason."""
    return (r["lost"]["count"] == r["mismatched"]["count"] == r["corrupt"]["count"] == r["submit_failed"] == 0
            and not r["duplicates"] and r["finished"] + r["failed"]["count"] == r["submitted"])


def write_results(name: str, report: dict[str, Any]) -> Path:
    """``bench/results/NAME.json`` and a time-stamped copy, as the other benchmarks write theirs."""
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / f"{name}.json", RESULTS / f"{name}-{stamp}.json"):
        path.write_text(json.dumps(report, indent=2))
    return RESULTS / f"{name}.json"

"""API load benchmark: N concurrent clients submitting jobs and polling status against ``vidinfer serve``.

The script starts its own server on loopback (a temporary ``VIDINFER_DATA_DIR``,
``VIDINFER_WORKERS=2`` by default, the status rate limit raised for the load),
makes a key for each of a few workspaces, uploads one small video (2 s 160x120
H.264) once per workspace, and runs ``--clients`` asyncio clients (one shared
``httpx.AsyncClient`` with a connection per client) for ``--seconds``. Each
client submits a job (built-in ``coco`` at infer_fps 1), polls its status every
``--poll`` seconds until the job ends, and repeats. When the time is up no new
job is submitted, and the clients keep polling until their jobs end or
``--drain-timeout`` passes. Then every submitted job's status is read once more,
and each workspace's job list is compared with what was submitted.

Printed and written to ``bench/results/api.json`` (and a time-stamped copy):
requests/s, p50/p99 latency of submit and of status, errors (any non-2xx other
than a 429 from the status call, and transport failures), 429s, jobs submitted /
done / failed / lost, the server's RSS at start and end, and the load average.

``--polls-only``: status polls alone. The server runs with no workers, the
script writes ``--jobs`` finished jobs straight into its job store (as a worker
would finish them), and ``--clients`` clients poll them back to back for
``--seconds``: polls/s, p50/p99, errors, the server's CPU ms per poll and the load
average go to ``bench/results/api_polls.json`` (and a time-stamped copy).

Run: ``.venv/bin/python bench/bench_api.py`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apiserver import ApiServer  # noqa: E402
from videos import small_clip  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COCO = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]
#: the status codes the API documents for a job that has ended without results
CANCELLED = 7


@dataclass
class Call:
    kind: str  # "submit" or "status"
    start: float  # monotonic
    latency: float  # seconds
    status: int  # HTTP status, 0 for a transport failure


@dataclass
class Tally:
    calls: list[Call] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # "submit 500", "status ReadTimeout", ...
    error_samples: list[str] = field(default_factory=list)
    submitted: dict[str, str] = field(default_factory=dict)  # job id -> workspace
    ended: dict[str, int] = field(default_factory=dict)  # job id -> final status code
    turnaround: list[float] = field(default_factory=list)  # submit to first poll that saw it end (s)

    def error(self, label: str, detail: str) -> None:
        self.errors[label] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{label}: {detail[:300]}")


async def _call(http: httpx.AsyncClient, tally: Tally, kind: str, method: str, url: str,
                **kwargs: object) -> httpx.Response | None:
    t0 = time.monotonic()
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        tally.calls.append(Call(kind, t0, time.monotonic() - t0, 0))
        tally.error(f"{kind} {type(exc).__name__}", repr(exc))
        return None
    tally.calls.append(Call(kind, t0, time.monotonic() - t0, response.status_code))
    if response.status_code == 429 and kind == "status":
        return response  # documented: counted apart, and the client waits Retry-After
    if not response.is_success:
        tally.error(f"{kind} {response.status_code}", response.text)
        return None
    return response


async def client(http: httpx.AsyncClient, tally: Tally, base: str, key: str, workspace: str, input_url: str,
                 poll: float, stop_at: float, drain_until: float) -> None:
    """Submit, poll every ``poll`` s until the job ends, repeat until ``stop_at``."""
    await asyncio.sleep(random.uniform(0, poll))  # stagger the clients over one poll interval
    while time.monotonic() < stop_at:
        response = await _call(http, tally, "submit", "POST", f"{base}/videoinfer", params={"api_key": key},
                               json={"input_url": input_url, "infer_fps": 1, "models": COCO})
        if response is None:
            await asyncio.sleep(poll)
            continue
        job_id = response.json()["job_id"]
        submitted_at = time.monotonic()
        tally.submitted[job_id] = workspace
        while time.monotonic() < drain_until:
            await asyncio.sleep(poll)
            response = await _call(http, tally, "status", "GET", f"{base}/videoinfer",
                                   params={"api_key": key, "job_id": job_id})
            if response is None:
                continue
            if response.status_code == 429:
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            code = response.json()["status"]
            if code != 1:
                tally.ended[job_id] = code
                tally.turnaround.append(time.monotonic() - submitted_at)
                break
        else:
            return  # drain timeout: the job is reported as lost below


async def verify(base: str, keys: dict[str, str], tally: Tally, warm_up: list[str]) -> dict[str, object]:
    """Read every submitted job once more, and each workspace's job list; not timed."""
    final: dict[str, int | None] = {}
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        async def one(job_id: str, workspace: str) -> None:
            for _ in range(5):
                r = await http.get(f"{base}/videoinfer", params={"api_key": keys[workspace], "job_id": job_id})
                if r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                final[job_id] = r.json()["status"] if r.is_success else None
                return
            final[job_id] = None

        await asyncio.gather(*(one(j, w) for j, w in tally.submitted.items()))
        listed: dict[str, list[str]] = {}
        for workspace, key in keys.items():
            r = await http.get(f"{base}/videoinfers", params={"api_key": key, "limit": 1000})
            listed[workspace] = [j["job_id"] for j in r.json()["jobs"]] if r.is_success else []
    known = set(tally.submitted)
    in_lists = {j for ids in listed.values() for j in ids} - set(warm_up)
    truncated = any(len(ids) == 1000 for ids in listed.values())
    done = sum(1 for c in final.values() if c == 0)
    cancelled = sum(1 for c in final.values() if c == CANCELLED)
    failed = sum(1 for c in final.values() if c is not None and c not in (0, 1, CANCELLED))
    unfinished = sum(1 for c in final.values() if c == 1)
    missing = sum(1 for c in final.values() if c is None)
    return {
        "submitted": len(known), "done": done, "failed": failed, "cancelled": cancelled,
        "lost": unfinished + missing, "still_running_after_drain": unfinished, "status_unreadable": missing,
        "failure_codes": dict(Counter(str(c) for c in final.values() if c not in (0, 1, None))),
        "not_in_job_lists": 0 if truncated else len(known - in_lists),
        "unexpected_in_job_lists": len(in_lists - known),  # duplicates the server made, say
        "job_lists_truncated": truncated,
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _latency(calls: list[Call]) -> dict[str, float | int | None]:
    ms = [c.latency * 1000 for c in calls]
    return {"count": len(ms), "p50_ms": _round(_pct(ms, 0.50)), "p99_ms": _round(_pct(ms, 0.99)),
            "max_ms": _round(max(ms, default=None))}


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in d.items()}


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Sampler:
    """Peak RSS and load average, sampled once a second in a thread while the load runs."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.peak = {"server": 0.0, "children": 0.0}
        self.max_load1 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                now = self.server.rss_mb()
            except Exception:  # noqa: BLE001 - a process that just exited
                continue
            self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}
            self.max_load1 = max(self.max_load1, os.getloadavg()[0])

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def load(args: argparse.Namespace, base: str, keys: dict[str, str], inputs: dict[str, str]) -> tuple[
        Tally, float, float, float]:
    tally = Tally()
    workspaces = list(keys)
    # idle connections are dropped after 4 s, before the server's keep-alive timeout (uvicorn: 5 s), so that
    # a request never races the server closing the connection it was sent on
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients,
                          keepalive_expiry=4.0)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as http:
        t0 = time.monotonic()
        stop_at = t0 + args.seconds
        drain_until = stop_at + args.drain_timeout
        tasks = []
        for i in range(args.clients):
            ws = workspaces[i % len(workspaces)]
            tasks.append(client(http, tally, base, keys[ws], ws, inputs[ws], args.poll, stop_at, drain_until))
        await asyncio.gather(*tasks)
        t_end = time.monotonic()
    return tally, t0, stop_at, t_end


def finished_jobs(data_dir: Path, workspace: str, n: int) -> list[str]:
    """``n`` done jobs for ``workspace`` written through the job store, as a worker finishes them."""
    from vidinfer.jobs.store import JobStore

    store = JobStore(f"sqlite:///{data_dir / 'vidinfer.db'}")
    ids = []
    try:
        for _ in range(n):
            job, _ = store.create(workspace, input_url="https://example.com/v.mp4", infer_fps="1", models=COCO)
            claimed = store.claim_id(job.id, "bench")
            store.finish(claimed, f"results/{job.id}.json", {"null_frames": 0, "frames": 2})
            ids.append(job.id)
    finally:
        store.close()
    return ids


async def poller(http: httpx.AsyncClient, tally: Tally, base: str, key: str, job_ids: list[str],
                 stop_at: float) -> None:
    """Poll finished jobs back to back (no pause) until ``stop_at``."""
    i = random.randrange(len(job_ids))
    while time.monotonic() < stop_at:
        i = (i + 1) % len(job_ids)
        await _call(http, tally, "status", "GET", f"{base}/videoinfer", params={"api_key": key, "job_id": job_ids[i]})


async def poll_load(args: argparse.Namespace, base: str, keys: dict[str, str],
                    jobs: dict[str, list[str]]) -> tuple[Tally, float, float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients,
                          keepalive_expiry=4.0)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as http:
        workspaces = list(keys)
        t0 = time.monotonic()
        await asyncio.gather(*(poller(http, tally, base, keys[ws], jobs[ws], t0 + args.seconds)
                               for ws in (workspaces[i % len(workspaces)] for i in range(args.clients))))
        t_end = time.monotonic()
    return tally, t0, t_end


def polls_only(args: argparse.Namespace) -> None:
    """Status polls of finished jobs, nothing else running: the API's own throughput."""
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="vidinfer-bench-polls-") as tmp:
        server = ApiServer(Path(tmp) / "data", workers=0,
                           env={"VIDINFER_STATUS_RATE_PER_MINUTE": "0", "VIDINFER_SECRET_KEY": "bench-secret"})
        with server:
            keys = {f"bench{i}": server.key(f"bench{i}") for i in range(args.workspaces)}
            jobs = {ws: finished_jobs(server.data_dir, ws, max(1, args.jobs // args.workspaces)) for ws in keys}
            asyncio.run(poll_load(argparse.Namespace(**{**vars(args), "clients": 4, "seconds": 2.0}),
                                  server.url, keys, jobs))  # warm-up: connections, first-call costs
            cpu0, server_cpu0 = time.process_time(), server.cpu_s()["server"]
            with Sampler(server) as sampler:
                tally, t0, t_end = asyncio.run(poll_load(args, server.url, keys, jobs))
            client_cpu = time.process_time() - cpu0
            server_cpu = server.cpu_s()["server"] - server_cpu0
            log = server.log.read_text(errors="replace")
        load_after = _loadavg()
    window = t_end - t0
    ok = [c for c in tally.calls if 200 <= c.status < 300]
    report = {
        "mode": "polls-only",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": load_after,
                    "loadavg1_max_during": round(sampler.max_load1, 2),
                    "note": "the clients and the API share the machine's cores (and other work on it)"},
        "settings": {"clients": args.clients, "seconds": args.seconds, "workspaces": args.workspaces,
                     "jobs": sum(len(v) for v in jobs.values()), "workers": 0,
                     "VIDINFER_STATUS_RATE_PER_MINUTE": 0, "request_timeout_s": args.timeout},
        "window_s": round(window, 2),
        "polls": len(tally.calls),
        "polls_per_s": round(len(ok) / window, 1),
        "status": _latency(tally.calls),
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(tally.errors),
        "error_samples": tally.error_samples,
        "cpu_s": {"clients": round(client_cpu, 1), "server": round(server_cpu, 1),
                  "server_ms_per_poll": round(1000 * server_cpu / max(1, len(tally.calls)), 3)},
        "server_log": {"error_lines": sum("ERROR" in line for line in log.splitlines()),
                       "tracebacks": log.count("Traceback")},
    }
    st = report["status"]
    print(f"polls-only: {args.clients} clients, {window:.0f} s, load {load_before} -> {load_after} "
          f"(max {report['machine']['loadavg1_max_during']})")
    print(f"polls/s {report['polls_per_s']} ({report['polls']} polls); p50 {st['p50_ms']} ms p99 {st['p99_ms']} ms; "
          f"errors {report['errors']} {report['errors_by_kind'] or ''}")
    print(f"server CPU {report['cpu_s']['server_ms_per_poll']} ms per poll; CPU s {report['cpu_s']}")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / "api_polls.json", RESULTS / f"api_polls-{stamp}.json"):
        path.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'api_polls.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long clients submit new jobs")
    parser.add_argument("--poll", type=float, default=0.5, help="each client's status poll interval (s)")
    parser.add_argument("--workspaces", type=int, default=4, help="workspaces (one key each); clients share them")
    parser.add_argument("--workers", type=int, default=2, help="VIDINFER_WORKERS")
    parser.add_argument("--drain-timeout", type=float, default=180.0,
                        help="how long to wait, after --seconds, for the submitted jobs to end")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument("--status-rate", type=int, default=None,
                        help="VIDINFER_STATUS_RATE_PER_MINUTE; default: twice what the clients on one key poll")
    parser.add_argument("--polls-only", action="store_true",
                        help="status polls of finished jobs only (no workers, no submits); see the docstring")
    parser.add_argument("--jobs", type=int, default=100, help="--polls-only: finished jobs the clients poll")
    args = parser.parse_args()
    if args.polls_only:
        polls_only(args)
        return
    per_key = math.ceil(args.clients / args.workspaces) * 60.0 / args.poll
    status_rate = args.status_rate if args.status_rate is not None else max(120, math.ceil(2 * per_key))

    video = small_clip()
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="vidinfer-bench-api-") as tmp:
        server = ApiServer(Path(tmp) / "data", workers=args.workers,
                           env={"VIDINFER_STATUS_RATE_PER_MINUTE": str(status_rate),
                                "VIDINFER_SECRET_KEY": "bench-secret"})
        with server:
            keys = {f"bench{i}": server.key(f"bench{i}") for i in range(args.workspaces)}
            inputs = {ws: server.upload(key, video) for ws, key in keys.items()}
            # one job per worker first, so that model loading is not part of the figures
            warm_start = time.monotonic()
            warm_ids = asyncio.run(_warm_up(server.url, keys, inputs, args.workers))
            warm_up_s = time.monotonic() - warm_start
            rss_start = server.rss_mb()
            cpu0, server_cpu0 = time.process_time(), server.cpu_s()
            with Sampler(server) as sampler:
                tally, t0, stop_at, t_end = asyncio.run(load(args, server.url, keys, inputs))
            client_cpu = time.process_time() - cpu0
            server_cpu = {k: v - server_cpu0[k] for k, v in server.cpu_s().items()}
            rss_end = server.rss_mb()
            jobs = asyncio.run(verify(server.url, keys, tally, warm_ids))
            log = server.log.read_text(errors="replace")
        load_after = _loadavg()

    window = [c for c in tally.calls if c.start < stop_at]
    drain = [c for c in tally.calls if c.start >= stop_at]
    ok = [c for c in window if 200 <= c.status < 300]
    rate_limited = sum(1 for c in tally.calls if c.status == 429)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": load_after,
                    "loadavg1_max_during": round(sampler.max_load1, 2),
                    "note": "2 cores shared with other test runs: the clients, the API and its workers "
                            "all run on them; compare runs only at a similar load"},
        "settings": {"clients": args.clients, "seconds": args.seconds, "poll_s": args.poll,
                     "workspaces": args.workspaces, "workers": args.workers, "drain_timeout_s": args.drain_timeout,
                     "request_timeout_s": args.timeout, "VIDINFER_STATUS_RATE_PER_MINUTE": status_rate,
                     "video": f"{video.name} ({video.stat().st_size} bytes)", "model": "coco", "infer_fps": 1},
        "warm_up_s": round(warm_up_s, 2),
        "window_s": round(stop_at - t0, 2),
        "drain_s": round(t_end - stop_at, 2),
        "requests": len(window),
        "requests_per_s": round(len(window) / (stop_at - t0), 1),
        "ok_requests_per_s": round(len(ok) / (stop_at - t0), 1),
        "submit": _latency([c for c in window if c.kind == "submit"]),
        "status": _latency([c for c in window if c.kind == "status"]),
        "status_during_drain": _latency([c for c in drain if c.kind == "status"]),
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(tally.errors),
        "error_samples": tally.error_samples,
        "rate_limited_429": rate_limited,
        "jobs": {**jobs, "jobs_per_s": round(jobs["done"] / (t_end - t0), 2),
                 "turnaround_p50_s": _round(_pct(tally.turnaround, 0.5)),
                 "turnaround_p99_s": _round(_pct(tally.turnaround, 0.99))},
        "rss_mb": {"start": _rounded(rss_start), "end": _rounded(rss_end), "peak": _rounded(sampler.peak),
                   "note": "server = the API process; children = its worker processes together"},
        "cpu_s": {"clients": round(client_cpu, 1), "server": round(server_cpu["server"], 1),
                  "workers": round(server_cpu["children"], 1),
                  "server_ms_per_request": round(1000 * server_cpu["server"] / max(1, len(tally.calls)), 2),
                  "note": "CPU seconds from the start of the load to the end of the drain"},
        "server_log": {"error_lines": sum("ERROR" in line for line in log.splitlines()),
                       "tracebacks": log.count("Traceback"), "database_locked": log.count("database is locked")},
    }
    _print(report)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / "api.json", RESULTS / f"api-{stamp}.json"):
        path.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'api.json'}")


async def _warm_up(base: str, keys: dict[str, str], inputs: dict[str, str], workers: int) -> list[str]:
    async with httpx.AsyncClient(timeout=60) as http:
        ws = next(iter(keys))
        ids = []
        for _ in range(workers):
            r = await http.post(f"{base}/videoinfer", params={"api_key": keys[ws]},
                                json={"input_url": inputs[ws], "infer_fps": 1, "models": COCO})
            r.raise_for_status()
            ids.append(r.json()["job_id"])
        deadline = time.monotonic() + 300
        for job_id in ids:
            while time.monotonic() < deadline:
                r = await http.get(f"{base}/videoinfer", params={"api_key": keys[ws], "job_id": job_id})
                if r.is_success and r.json()["status"] != 1:
                    break
                await asyncio.sleep(0.5)
    return ids


def _print(r: dict) -> None:
    s, st, j = r["submit"], r["status"], r["jobs"]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f} ms"

    print(f"{r['settings']['clients']} clients, {r['window_s']:.0f} s, load {r['machine']['loadavg_before']} -> "
          f"{r['machine']['loadavg_after']}")
    print(f"requests/s {r['requests_per_s']} ({r['requests']} requests)")
    print(f"submit  n={s['count']} p50 {ms(s['p50_ms'])} p99 {ms(s['p99_ms'])}")
    print(f"status  n={st['count']} p50 {ms(st['p50_ms'])} p99 {ms(st['p99_ms'])}")
    print(f"errors {r['errors']} {r['errors_by_kind'] or ''}; 429s {r['rate_limited_429']}")
    print(f"jobs submitted {j['submitted']} done {j['done']} failed {j['failed']} lost {j['lost']} "
          f"({j['jobs_per_s']} jobs/s; turnaround p50 {j['turnaround_p50_s']} s; drain {r['drain_s']} s)")
    print(f"server RSS {r['rss_mb']['start']['server']:.0f} -> {r['rss_mb']['end']['server']:.0f} MB "
          f"(workers {r['rss_mb']['start']['children']:.0f} -> {r['rss_mb']['end']['children']:.0f} MB)")
    print(f"CPU s: {r['cpu_s']}")
    print(f"server log: {r['server_log']}")


if __name__ == "__main__":
    main()

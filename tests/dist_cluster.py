"""A distributed vidinfer on loopback for tests: one ``vidinfer serve`` (the API alone) and
``vidinfer worker`` processes sharing a PostgreSQL database, a RabbitMQ queue and an S3 bucket,
and the long video and single-pass results the distributed runs are compared with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from seaweed import SeaweedS3
from server import Server
from services import BROKER

from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.registry import ModelRegistry

FPS = 5


class Cluster:
    """One API and any number of workers sharing PostgreSQL, a RabbitMQ queue and an S3 bucket."""

    def __init__(self, tmp: Path, database: str, s3: SeaweedS3, *, broker: str = BROKER,
                 env: dict[str, str] | None = None) -> None:
        queue = f"test-{uuid.uuid4().hex[:8]}"
        self.env = {"VIDINFER_DATABASE_URL": database, "VIDINFER_BROKER_URL": broker, "VIDINFER_QUEUE": queue,
                    "VIDINFER_CHUNK_SECONDS": "2", "VIDINFER_DECODE_THREADS": "1", **s3.env(prefix=queue),
                    **(env or {})}
        self.api = Server(tmp / "api", workers=0, env=self.env).start()
        self.env["VIDINFER_PUBLIC_URL"] = self.api.url
        self.workers: list[subprocess.Popen[bytes]] = []
        self.tmp = tmp

    def worker(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"worker{len(self.workers)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "vidinfer.cli", "worker", "--concurrency", "1"],
                                env={**self.api.env, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and its pool's children, as a machine that loses power would."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                self.kill(proc)
        self.api.stop()

    def chunks(self, job_id: str) -> list[dict]:
        from vidinfer.jobs.store import JobStore

        return JobStore(self.env["VIDINFER_DATABASE_URL"]).chunks(job_id)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.tmp.glob("worker*.log")))


def single_pass_results(video: Path) -> dict:
    """The embedded engine's results for ``coco`` at ``FPS`` on ``video``, in one pass, without timings."""
    runs = resolve_runs(ModelRegistry(), [ModelRequest("coco", "coco")])
    return without_timings(run_inference(str(video), runs, Fraction(FPS)).results_json)


def without_timings(results: dict) -> dict:
    return {k: v if k.endswith("_offset") or not isinstance(v, list) else [{**e, "time": None} if e else e for e in v]
            for k, v in results.items()}


def submit(c: Cluster, key: str, video: Path) -> str:
    upload = c.api.upload(key, video)
    assert "X-Amz-Signature" in upload and "&X-Goog-Expires=" in upload  # S3's presigned URL
    response = c.api.submit(key, upload, infer_fps=FPS)
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, c: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{c.logs()}")

"""The distributed mode on real services: RabbitMQ, PostgreSQL and SeaweedFS on loopback.

``vidinfer serve`` (the API alone) and ``vidinfer worker`` processes, as an operator runs
them, with one long video split into chunks across workers; workers and the API are
killed with SIGKILL mid-job, and the results must equal a single-pass run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from seaweed import SeaweedS3, missing_service
from server import Server
from services import BROKER, reachable
from videos import make_video

from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.registry import ModelRegistry

FPS = 5


@pytest.fixture
def cluster(tmp_path: Path, pg_database: str, seaweed_s3: SeaweedS3) -> Iterator[Cluster]:
    if not reachable(5672):
        missing_service("RabbitMQ is not running on 127.0.0.1:5672 (see ../shared/SERVICES.md)")
    c = Cluster(tmp_path, pg_database, seaweed_s3)
    try:
        yield c
    finally:
        c.stop()


class Cluster:
    """One API and any number of workers sharing PostgreSQL, a RabbitMQ queue and an S3 bucket."""

    def __init__(self, tmp: Path, database: str, s3: SeaweedS3) -> None:
        queue = f"test-{uuid.uuid4().hex[:8]}"
        self.env = {"VIDINFER_DATABASE_URL": database, "VIDINFER_BROKER_URL": BROKER, "VIDINFER_QUEUE": queue,
                    "VIDINFER_CHUNK_SECONDS": "2", "VIDINFER_DECODE_THREADS": "1", **s3.env(prefix=queue)}
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


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s at 29.97 fps with B-frames and a GOP that does not divide the chunks: 60 samples at 5 fps."""
    return make_video(tmp_path_factory.mktemp("dist") / "long.mp4", frames=360, fps=Fraction(30000, 1001),
                      size=(160, 120), gop=45, bframes=2)


@pytest.fixture(scope="module")
def single_pass(long_video: Path) -> dict:
    """The embedded engine's results for the same request, in one pass."""
    runs = resolve_runs(ModelRegistry(), [ModelRequest("coco", "coco")])
    return _without_timings(run_inference(str(long_video), runs, Fraction(FPS)).results_json)


def _without_timings(results: dict) -> dict:
    return {k: v if k.endswith("_offset") else [{**e, "time": None} if e else e for e in v]
            for k, v in results.items()}


def _submit(c: Cluster, key: str, video: Path) -> str:
    upload = c.api.upload(key, video)
    assert "X-Amz-Signature" in upload and "&X-Goog-Expires=" in upload  # S3's presigned URL
    response = c.api.submit(key, upload, infer_fps=FPS)
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def _wait_for(predicate, timeout: float, what: str, c: Cluster) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{c.logs()}")


def test_a_long_video_split_across_workers_gives_the_single_pass_results(cluster: Cluster, long_video: Path,
                                                                         single_pass: dict) -> None:
    cluster.worker()
    cluster.worker()
    key = cluster.api.key("acme")
    job_id = _submit(cluster, key, long_video)
    status = cluster.api.wait(key, job_id, timeout=300)
    assert status["status"] == 0, (status, cluster.logs())
    chunks = cluster.chunks(job_id)
    assert len(chunks) == 6 and all(c["done"] and c["runs"] == 1 for c in chunks)
    assert status["frames_done"] == status["frames_total"] == 60
    results = httpx.get(status["output_signed_url"]).json()
    assert _without_timings(results) == single_pass


def test_a_worker_killed_mid_chunk_is_replaced_and_the_results_are_unchanged(
        cluster: Cluster, long_video: Path, single_pass: dict) -> None:
    key = cluster.api.key("acme")
    first = cluster.worker()
    job_id = _submit(cluster, key, long_video)
    _wait_for(lambda: any(c["frames_done"] > 0 and not c["done"] for c in cluster.chunks(job_id)), 120,
              "a chunk to start", cluster)
    cluster.kill(first)
    interrupted = [c["idx"] for c in cluster.chunks(job_id) if c["runs"] and not c["done"]]
    cluster.worker()
    status = cluster.api.wait(key, job_id, timeout=300)
    assert status["status"] == 0, (status, cluster.logs())
    chunks = cluster.chunks(job_id)
    assert all(c["done"] for c in chunks)
    assert [c["idx"] for c in chunks if c["runs"] == 2] == interrupted  # redelivered once, to the new worker
    assert sum(c["frames_done"] for c in chunks) == status["frames_done"] == 60  # each chunk counted once
    assert _without_timings(httpx.get(status["output_signed_url"]).json()) == single_pass


def test_jobs_go_on_when_the_api_is_killed_and_cancel_stops_the_chunks(cluster: Cluster, long_video: Path) -> None:
    key = cluster.api.key("acme")
    cluster.worker()
    job_id = _submit(cluster, key, long_video)
    _wait_for(lambda: any(c["frames_done"] > 0 for c in cluster.chunks(job_id)), 120, "work to start", cluster)
    cluster.api.kill(signal.SIGKILL)
    _wait_for(lambda: all(c["done"] for c in cluster.chunks(job_id)), 300, "the job to finish without the API",
              cluster)
    cluster.api.start()
    assert cluster.api.wait(key, job_id)["status"] == 0

    second = _submit(cluster, key, long_video)
    _wait_for(lambda: any(c["frames_done"] > 0 for c in cluster.chunks(second)), 120, "work to start", cluster)
    cancelled = httpx.delete(f"{cluster.api.url}/videoinfer", params={"api_key": key, "job_id": second}).json()
    assert cancelled["status"] in (1, 7)
    status = cluster.api.wait(key, second, timeout=60)
    assert status["status"] == 7 and status["state"] == "cancelled"
    done_then = sum(c["done"] for c in cluster.chunks(second))
    time.sleep(3)
    assert sum(c["done"] for c in cluster.chunks(second)) == done_then < 6  # no chunk ran on after the cancel


def test_tracking_runs_once_over_the_merged_chunks(cluster: Cluster, long_video: Path, tmp_path: Path) -> None:
    """A still box seen in every sample of 6 chunks is one track from the first sample to the last."""
    from onnx_graphs import input_size_box_model, ultralytics_metadata

    model = input_size_box_model(tmp_path / "box.onnx", metadata=ultralytics_metadata("detect", ["thing"], end2end=True))
    added = subprocess.run([sys.executable, "-m", "vidinfer.cli", "models", "add", "box", str(model)],
                           env=cluster.api.env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    cluster.worker()
    key = cluster.api.key("acme")
    response = cluster.api.submit(key, cluster.api.upload(key, long_video), [{"model_id": "box"}], infer_fps=FPS,
                                  tracker="bytetrack", zones=[[[0, 0], [160, 0], [160, 120], [0, 120]]])
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    status = cluster.api.wait(key, job_id, timeout=300)
    assert status["status"] == 0, (status, cluster.logs())
    assert len(cluster.chunks(job_id)) == 6
    results = httpx.get(status["output_signed_url"]).json()
    assert {p["tracker_id"] for entry in results["box"] for p in entry["predictions"]} == {1}
    (track,) = results["tracks"]["box"]
    assert (track["first_frame"], track["last_frame"], track["frames_seen"]) == (0, results["frame_offset"][-1], 60)
    assert results["counts"]["box"]["zones"][0]["present"] == [1] * 60

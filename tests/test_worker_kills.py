"""A pool worker SIGKILLed mid-job (issue 7; ``bench/bench_faults.py`` does it at scale): the pool
restarts it and runs the job again to the same results; killed ``VIDINFER_MAX_ATTEMPTS`` times, the job
fails with ``worker_lost`` instead of running forever."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
from server import Server
from videos import make_video


def _pool_workers(server: Server) -> list[int]:
    assert server.proc is not None
    return [p.pid for p in psutil.Process(server.proc.pid).children()
            if any("spawn_main" in part for part in p.cmdline())]  # not the resource tracker


def _kill_mid_job(server: Server, key: str, job_id: str, attempt: int) -> None:
    """SIGKILL the worker once it runs ``attempt`` of the job and has done a few samples."""
    deadline = time.monotonic() + 60
    while True:
        status = server.status(key, job_id)
        if status["state"] == "running" and status["attempts"] == attempt and status["frames_done"] >= 2:
            break
        assert status["status"] == 1 and time.monotonic() < deadline, status
        time.sleep(0.02)
    (worker,) = _pool_workers(server)
    os.kill(worker, signal.SIGKILL)


def _predictions(url: str) -> tuple[list, list]:
    results = httpx.get(url).json()
    return results["frame_offset"], [e["predictions"] for e in results["coco"]]


def test_a_killed_pool_worker_is_replaced_and_its_job_reruns_to_the_same_results_or_fails_worker_lost(
        tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", frames=240, size=(320, 240))  # 8 s: 40 samples at 5 fps
    with Server(tmp_path / "data", workers=1, env={"VIDINFER_MAX_ATTEMPTS": "2"}) as server:
        key = server.key()
        upload = server.upload(key, video)
        clean = server.wait(key, server.submit(key, upload, infer_fps=5).json()["job_id"])
        assert clean["status"] == 0 and clean["attempts"] == 1

        once = server.submit(key, upload, infer_fps=5).json()["job_id"]
        _kill_mid_job(server, key, once, attempt=1)
        rerun = server.wait(key, once)
        assert (rerun["status"], rerun["attempts"]) == (0, 2), (rerun, server.log.read_text()[-3000:])
        assert _predictions(rerun["output_signed_url"]) == _predictions(clean["output_signed_url"])

        twice = server.submit(key, upload, infer_fps=5).json()["job_id"]
        _kill_mid_job(server, key, twice, attempt=1)
        _kill_mid_job(server, key, twice, attempt=2)
        lost = server.wait(key, twice)
        assert (lost["status"], lost["state"], lost["error"]["code"]) == (8, "failed", "worker_lost"), lost

        after = server.wait(key, server.submit(key, upload, infer_fps=5).json()["job_id"])  # the pool still works
        assert after["status"] == 0 and len(_pool_workers(server)) == 1

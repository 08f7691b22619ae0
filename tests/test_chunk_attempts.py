"""A distributed chunk whose worker keeps dying fails its job with worker_lost instead of circulating forever.

Runs the engine's chunk step on the embedded store (SQLite, local files): the cap is
store logic, and the crash tests in test_distributed.py cover real redelivery.
"""

from __future__ import annotations

from pathlib import Path

from vidinfer.config import Settings
from vidinfer.jobs.distributed import Delivery, _Engine
from vidinfer.jobs.states import JobState
from vidinfer.jobs.store import Job


def _planned_job(engine: _Engine, runs: int, *, retries: int = 0) -> Job:
    """A running job of two chunks whose chunk 0 was delivered ``runs`` times (and retried ``retries``)."""
    store = engine.runner.store
    job, _ = store.create("acme", input_url="http://x.invalid/v.mp4", infer_fps="5/1", models=[])
    job = store.claim_id(job.id, "w1")
    assert job is not None and store.set_chunks(job, [(0, 10), (10, 20)], 20)
    for _ in range(runs):
        store.chunk_started(job.id, 0)
    for _ in range(retries):
        store.chunk_started(job.id, 0, count=False)
    return job


def test_a_chunk_delivered_max_attempts_times_fails_the_job_worker_lost(tmp_path: Path) -> None:
    engine = _Engine(Settings(data_dir=tmp_path, max_attempts=2))
    store = engine.runner.store
    job = _planned_job(engine, runs=2, retries=3)
    assert [c["runs"] for c in store.chunks(job.id)] == [2, 0]  # outage retries are not attempts
    engine.chunk(job.id, 0, Delivery())
    ended = store.get(job.id)
    assert ended.state is JobState.FAILED and ended.error_code == "worker_lost"
    assert "chunk 0 was started 2 times" in (ended.error_message or "")


def test_below_the_cap_or_within_one_delivery_the_chunk_runs(tmp_path: Path) -> None:
    engine = _Engine(Settings(data_dir=tmp_path, max_attempts=2))
    store = engine.runner.store
    # one earlier delivery died: this one runs (and fails on its own merits: the job names no model)
    first = _planned_job(engine, runs=1)
    engine.chunk(first.id, 0, Delivery())
    # an outage retry of the delivery already counted runs again rather than hitting the cap
    retried = _planned_job(engine, runs=2)
    engine.chunk(retried.id, 0, Delivery(counted=True))
    for job in (first, retried):
        ended = store.get(job.id)
        assert ended.state is JobState.FAILED and ended.error_code not in (None, "worker_lost"), ended
    assert [c["runs"] for c in store.chunks(retried.id)] == [2, 0]

"""The job store under concurrency, on SQLite (embedded) and PostgreSQL (distributed)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from vidinfer.jobs.states import JobState
from vidinfer.jobs.store import JobStore


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("pg_database")


def _drain(url: str, worker: str, out: multiprocessing.Queue) -> None:
    store = JobStore(url)
    claimed = []
    while (job := store.claim(worker)) is not None:
        store.progress(job, 1, 2)
        assert store.finish(job, f"results/{job.id}.json", {"frames": 2})
        claimed.append(job.id)
    out.put(claimed)


def test_concurrent_workers_claim_each_job_exactly_once(url: str) -> None:
    store = JobStore(url)
    ids = {store.create("acme", input_url="http://x/v.mp4", infer_fps="5/1", models=[])[0].id for _ in range(60)}
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(url, f"w{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    claimed = [job_id for _ in procs for job_id in out.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(claimed) == sorted(ids)  # none twice, none lost
    jobs = store.list("acme", limit=100)
    assert all(j.state is JobState.DONE and j.attempts == 1 and j.frames_done == 2 for j in jobs)


def test_a_worker_presumed_dead_cannot_overwrite_its_successor(url: str) -> None:
    store = JobStore(url)
    job, created = store.create("acme", input_url="http://x/v.mp4", infer_fps="5/1", models=[],
                                idempotency_key="k1")
    assert created and store.create("acme", input_url="http://x/v.mp4", infer_fps="5/1", models=[],
                                    idempotency_key="k1") == (job, False)
    old = store.claim("w-old")
    assert store.requeue_running(max_attempts=3) == (1, 0)
    new = store.claim("w-new")
    assert new is not None and new.attempts == 2
    assert not store.finish(old, "results/old.json", {"frames": 1})  # the old attempt's write is refused
    assert not store.fail(old, "internal_error", "x", "late failure")
    assert store.finish(new, "results/new.json", {"frames": 3})
    final = store.get(job.id, "acme")
    assert final.state is JobState.DONE and final.result_key == "results/new.json"
    with pytest.raises(Exception, match="no such job"):
        store.get(job.id, "rival")


def test_an_idempotency_key_reused_for_another_request_is_refused(url: str) -> None:
    """Issue 14.15: the same key with a different body returned the first job, dropping the second."""
    from vidinfer.errors import IdempotencyConflict

    store = JobStore(url)
    models = [{"model_id": "coco", "model_version": None, "inference_type": "object-detection",
               "inference_params": {"confidence": 0.5}}]
    request = {"input_url": "http://x/v.mp4", "infer_fps": "5/1", "models": models, "notify_url": "http://h/x",
               "options": {"tracker": "bytetrack", "lines": [], "zones": []}}
    job, created = store.create("acme", idempotency_key="k", **request)
    assert created and store.create("acme", idempotency_key="k", **request) == (job, False)
    for field, other in [("input_url", "http://x/w.mp4"), ("infer_fps", "2/1"), ("notify_url", None),
                         ("models", [{**models[0], "inference_params": {"confidence": 0.6}}]), ("options", None)]:
        with pytest.raises(IdempotencyConflict, match=f"{job.id} with a different request \\({field} differ") as info:
            store.create("acme", idempotency_key="k", **{**request, field: other})
        assert info.value.status_code == 422 and info.value.code == "idempotency_key_reused"
    assert store.create("rival", idempotency_key="k", **request)[1]  # keys are per workspace
    assert len(store.list("acme")) == 1


def test_cancel_says_whether_it_ended_a_queued_job(url: str) -> None:
    """Only the call that ends a queued job sends its webhook; a running job's worker sends its own."""
    store = JobStore(url)
    queued = store.create("acme", input_url="http://x/v.mp4", infer_fps="5/1", models=[])[0]
    job, ended = store.cancel(queued.id, "acme")
    assert ended and job.state is JobState.CANCELLED
    assert store.cancel(queued.id, "acme")[1] is False  # already cancelled
    store.create("acme", input_url="http://x/v.mp4", infer_fps="5/1", models=[])
    running = store.claim("w")
    assert running is not None
    job, ended = store.cancel(running.id, "acme")
    assert not ended and job.state is JobState.RUNNING and job.cancel_requested


def test_a_job_whose_worker_keeps_dying_fails_with_a_reason(url: str) -> None:
    store = JobStore(url)
    job = store.create("acme", input_url="http://x/v.mp4", infer_fps="5/1", models=[])[0]
    for _ in range(2):
        assert store.claim("w") is not None
        store.requeue_running(max_attempts=2)
    final = store.get(job.id)
    assert final.state is JobState.FAILED and final.failure == "worker_lost" and "2 times" in final.error_message

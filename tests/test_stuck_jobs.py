"""No distributed job stays ``running`` forever.

Celery acknowledges a task that raised, and RabbitMQ never redelivers the task of a worker that hangs,
so a plan, chunk or merge that raised anything but an outage or a known failure, or that hangs, left
its job running for good. Runs the engine's steps on the embedded store (SQLite, local files) with an
injected fault, and the stall sweep on SQLite and on the real PostgreSQL; test_distributed.py covers
real workers (killed mid-chunk, cancelled through the API).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from onnx_graphs import input_size_box_model, ultralytics_metadata
from sqlalchemy import update
from videos import make_video

from vidinfer.config import Settings
from vidinfer.jobs import distributed, runner
from vidinfer.jobs.db import jobs
from vidinfer.jobs.distributed import Delivery, _Engine, fail_stalled, input_key
from vidinfer.jobs.states import FAILURE_STATUS, JobState, wire_status
from vidinfer.jobs.store import Job, JobStore
from vidinfer.models.registry import ModelRegistry

FPS = "10"  # a 3 s video at 30 fps: 30 samples, two chunks of 15


@pytest.fixture
def engine(tmp_path: Path) -> _Engine:
    settings = Settings(data_dir=tmp_path / "data", batch_size=2)
    model = input_size_box_model(tmp_path / "box.onnx", metadata=ultralytics_metadata("detect", ["thing"],
                                                                                         end2end=True))
    ModelRegistry.from_settings(settings).add("box", str(model))
    return _Engine(settings)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "v.mp4", frames=90)


def _job(engine: _Engine, video: Path) -> Job:
    """A queued job whose input (a URL, in the planner's words) is already in the blob store."""
    store = engine.runner.store
    job, _ = store.create("acme", input_url="http://x.invalid/v.mp4", infer_fps=FPS,
                          models=[{"model_id": "box", "model_version": None, "inference_params": {}}])
    engine.runner.blobs.put_file(input_key(job), video)
    return job


def _planned(engine: _Engine, video: Path) -> Job:
    """A running job of two chunks (as its planner would record them), none started."""
    job = engine.runner.store.claim_id(_job(engine, video).id, "planner")
    assert job is not None and engine.runner.store.set_chunks(job, [(0, 15), (15, 30)], 30)
    return job


def _run_chunk(engine: _Engine, job: Job, idx: int) -> None:
    """A chunk task's body, as the worker runs it."""
    engine.ride_out(job.id, lambda: engine.chunk(job.id, idx, Delivery()), f"chunk {idx}")


def _internal_error(engine: _Engine, job: Job, step: str, exc_type: str, caplog: pytest.LogCaptureFixture) -> None:
    ended = engine.runner.store.get(job.id)
    assert ended.state is JobState.FAILED, ended
    assert ended.failure == "internal_error" and ended.error_code == "internal_error"
    assert wire_status(ended.state, ended.failure) == FAILURE_STATUS["internal_error"] == 2
    message = ended.error_message or ""
    assert message.startswith(f"{step} failed unexpectedly ({exc_type})"), message
    assert "/secret/" not in message and "Traceback" not in message  # the details stay in the worker's log
    logged = [r for r in caplog.records if r.exc_info and job.id in r.getMessage()]
    assert logged and "/secret/" in str(logged[0].exc_info[1])


def _broken_input(self: _Engine, job: Job) -> Iterator[Path]:
    raise OSError("[Errno 5] Input/output error: '/secret/spool/input'")


def test_an_unexpected_error_in_the_plan_fails_the_job_internal_error(
        engine: _Engine, video: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(_Engine, "_local_input", _broken_input)
    job = _job(engine, video)
    engine.ride_out(job.id, lambda: engine.plan(None, job.id), "the plan step")  # type: ignore[arg-type]
    _internal_error(engine, job, "the plan step", "OSError", caplog)


def test_an_unexpected_error_in_a_chunk_fails_the_job_and_the_other_chunk_stops(
        engine: _Engine, video: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    job = _planned(engine, video)
    with monkeypatch.context() as patch:
        patch.setattr(_Engine, "_local_input", _broken_input)
        _run_chunk(engine, job, 1)
    _internal_error(engine, job, "chunk 1", "OSError", caplog)
    _run_chunk(engine, job, 0)  # a chunk of the failed job: does nothing, and the job stays failed
    assert [c["runs"] for c in engine.runner.store.chunks(job.id)] == [0, 1]
    assert engine.runner.store.get(job.id).failure == "internal_error"


def test_an_unexpected_error_in_the_merge_fails_the_job_internal_error(
        engine: _Engine, video: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    store = engine.runner.store
    merged = _planned(engine, video)  # without the fault, the same two chunks end the job done
    _run_chunk(engine, merged, 0)
    _run_chunk(engine, merged, 1)
    assert store.get(merged.id).state is JobState.DONE

    def bad_merge(parts: list[dict]) -> dict:
        raise ValueError("chunk results disagree")

    monkeypatch.setattr(distributed, "merge_results", bad_merge)
    job = _planned(engine, video)
    _run_chunk(engine, job, 0)
    assert store.get(job.id).state is JobState.RUNNING
    _run_chunk(engine, job, 1)  # the last chunk merges
    ended = store.get(job.id)
    assert ended.state is JobState.FAILED and ended.failure == "internal_error"
    assert (ended.error_message or "").startswith("the merge failed unexpectedly (ValueError)")
    assert any(r.exc_info and job.id in r.getMessage() for r in caplog.records)


def test_a_cancel_reaches_a_chunk_in_progress(engine: _Engine, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DELETE /videoinfer of a running job stops its chunk at the next batch; the job ends cancelled."""
    monkeypatch.setattr(runner, "CANCEL_EVERY", 0.0)  # read the flag at every batch, not once a second
    store = engine.runner.store
    job = _planned(engine, video)
    progress = store.chunk_progress
    seen: list[int] = []

    def cancel_after_the_first_batch(job_id: str, idx: int, frames_done: int, **kw: object) -> bool:
        if not kw.get("done") and not seen:
            store.cancel(job_id, "acme")  # what the API's DELETE does
        seen.append(frames_done)
        return progress(job_id, idx, frames_done, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "chunk_progress", cancel_after_the_first_batch)
    _run_chunk(engine, job, 0)
    ended = store.get(job.id)
    assert ended.state is JobState.CANCELLED and wire_status(ended.state, ended.failure) == 7
    assert seen and max(seen) < 15  # it stopped before its chunk's last sample
    assert not any(c["done"] for c in store.chunks(job.id))
    _run_chunk(engine, job, 1)  # the job's other chunk, delivered later, does not start
    assert [c["runs"] for c in store.chunks(job.id)] == [1, 0]


def test_a_chunk_in_progress_stops_once_another_chunk_failed_the_job(
        engine: _Engine, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CANCEL_EVERY", 0.0)
    store = engine.runner.store
    job = _planned(engine, video)
    progress = store.chunk_progress
    seen: list[int] = []

    def fail_after_the_first_batch(job_id: str, idx: int, frames_done: int, **kw: object) -> bool:
        if not seen:  # chunk 1, on another worker, fails the job meanwhile
            assert store.fail(store.get(job_id), "internal_error", "internal_error", "chunk 1 failed")
        seen.append(frames_done)
        return progress(job_id, idx, frames_done, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "chunk_progress", fail_after_the_first_batch)
    _run_chunk(engine, job, 0)
    assert seen and max(seen) < 15  # it stopped at its next batch instead of running its chunk out
    ended = store.get(job.id)
    assert ended.failure == "internal_error" and ended.error_message == "chunk 1 failed"  # the first outcome stays


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_database")


def test_the_sweep_fails_jobs_whose_started_chunk_or_merge_went_silent(store_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=store_url, stall_seconds=60)
    store = JobStore(settings.database)

    def planned(chunks: int) -> Job:
        job, _ = store.create("acme", input_url="http://x.invalid/v.mp4", infer_fps="5", models=[])
        job = store.claim_id(job.id, "planner")
        assert job is not None and store.set_chunks(job, [(i * 10, i * 10 + 10) for i in range(chunks)], chunks * 10)
        return job

    def silent_for(job: Job, seconds: float) -> None:
        with store.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(updated_at=time.time() - seconds))

    hung_chunk = planned(2)  # chunk 0 started, then nothing for 10 minutes (chunk 1 waits in the queue)
    store.chunk_started(hung_chunk.id, 0)
    hung_merge = planned(1)  # every chunk done, the merge never ended
    store.chunk_started(hung_merge.id, 0)
    store.chunk_progress(hung_merge.id, 0, 10, done=True, stats={})
    queued = planned(2)  # its chunks wait behind other jobs' in the queue: not a stall
    for job in (hung_chunk, hung_merge, queued):
        silent_for(job, 600)
    late_start = planned(1)  # silent while queued, then its chunk starts: that is a heartbeat
    silent_for(late_start, 600)
    store.chunk_started(late_start.id, 0)
    recent = planned(2)  # a chunk that progressed 30 s ago, under the 60 s limit
    store.chunk_started(recent.id, 0)
    store.chunk_progress(recent.id, 0, 4)
    silent_for(recent, 30)

    assert fail_stalled(store, settings) == 2
    for job in (hung_chunk, hung_merge):
        ended = store.get(job.id)
        assert ended.state is JobState.FAILED and ended.failure == "worker_lost", ended
        assert wire_status(ended.state, ended.failure) == 8 and "VIDINFER_STALL_SECONDS" in (ended.error_message or "")
    for job in (queued, late_start, recent):
        assert store.get(job.id).state is JobState.RUNNING
    assert fail_stalled(store, settings) == 0  # an ended job is not failed twice


def test_a_chunks_progress_is_its_heartbeat(engine: _Engine, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each progress write of a running chunk tells the sweep its worker is alive."""
    store = engine.runner.store
    job = _planned(engine, video)
    progress = store.chunk_progress
    stalled_after: list[list[str]] = []

    def silent_then_progress(job_id: str, idx: int, frames_done: int, **kw: object) -> bool:
        with store.engine.begin() as conn:  # as if the last write were 10 minutes ago
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=time.time() - 600))
        stalled = store.stalled(time.time() - 60)
        done = progress(job_id, idx, frames_done, **kw)  # type: ignore[arg-type]
        if not kw.get("done"):
            assert stalled == [job_id]  # the sweep would have failed it here
            stalled_after.append(store.stalled(time.time() - 60))
        return done

    monkeypatch.setattr(store, "chunk_progress", silent_then_progress)
    _run_chunk(engine, job, 0)
    assert stalled_after and all(s == [] for s in stalled_after)

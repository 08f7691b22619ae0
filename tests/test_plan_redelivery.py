"""A plan task redelivered after its planner died sends the chunks no worker has started.

The planner records the chunks, then sends one task each; a planner killed between the
two left a job that stayed running forever, since the redelivered plan found the chunks
recorded and sent nothing. Runs the engine's plan step on the embedded store (SQLite)
against the real RabbitMQ, reading back what reached a queue of the test's own; the
crash tests in test_distributed.py cover real redelivery of chunks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import BROKER

from vidinfer.config import Settings
from vidinfer.jobs.distributed import CHUNK, _Engine, make_celery
from vidinfer.jobs.store import Job


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path, broker_url=BROKER, queue=f"test-plan-{uuid.uuid4().hex[:8]}")
    yield settings
    with make_celery(settings).connection_for_write() as conn:
        conn.default_channel.queue_delete(settings.queue)


def _sent(settings: Settings) -> list[tuple[str, list]]:
    """The tasks waiting in the settings' queue: (name, args), taken off it."""
    app = make_celery(settings)
    out = []
    with app.connection_for_read() as conn, conn.SimpleQueue(settings.queue) as queue:
        while True:
            try:
                message = queue.get(timeout=1)
            except queue.Empty:
                return out
            out.append((message.headers["task"], message.decode()[0]))
            message.ack()


def _half_planned(engine: _Engine) -> Job:
    """A job whose planner recorded 4 chunks and died: chunk 0 done, chunk 1 started, 2 and 3 never sent."""
    store = engine.runner.store
    job, _ = store.create("acme", input_url="http://x.invalid/v.mp4", infer_fps="5/1", models=[])
    job = store.claim_id(job.id, "dead-planner")
    assert job is not None and store.set_chunks(job, [(0, 10), (10, 20), (20, 30), (30, 40)], 40)
    store.chunk_started(job.id, 0)
    store.chunk_progress(job.id, 0, 10, done=True, stats={})
    store.chunk_started(job.id, 1)
    return job


def test_a_redelivered_plan_sends_the_chunks_no_worker_started(settings: Settings) -> None:
    engine = _Engine(settings)
    app = make_celery(settings)
    job = _half_planned(engine)
    engine.plan(app, job.id, redelivered=True)
    assert sorted(_sent(settings)) == [(CHUNK, [job.id, 2]), (CHUNK, [job.id, 3])]


def test_a_duplicate_plan_or_one_for_an_ended_job_sends_nothing(settings: Settings) -> None:
    """The API's sweep may send a job's plan twice: the second finds the plan made and leaves it."""
    engine = _Engine(settings)
    app = make_celery(settings)
    job = _half_planned(engine)
    engine.plan(app, job.id, redelivered=False)
    ended = _half_planned(engine)
    assert engine.runner.store.fail(ended, "error", "test", "failed on purpose")
    engine.plan(app, ended.id, redelivered=True)
    assert _sent(settings) == []

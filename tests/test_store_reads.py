"""The SQLite job store under load: reads (the status poll) never wait for the write lock."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from vidinfer.jobs.store import JobStore


def test_reads_do_not_wait_for_a_writer_holding_the_sqlite_write_lock(tmp_path: Path) -> None:
    # Found by bench/bench_api.py: every read took BEGIN IMMEDIATE, so 100 clients' status polls queued
    # for the one write lock behind each other and the workers' progress writes (p50 of seconds).
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    key = store.create_key("acme")
    job, _ = store.create("acme", input_url="http://example.com/a.mp4", infer_fps="1/1", models=[])
    writer = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None, check_same_thread=False)
    read: dict[str, object] = {}

    def poll() -> None:
        t0 = time.monotonic()
        read["job"], read["workspace"] = store.get(job.id, "acme"), store.workspace_for_key(key)
        read["listed"] = store.list("acme")
        read["seconds"] = time.monotonic() - t0

    try:
        writer.execute("BEGIN IMMEDIATE")  # a worker mid-write holds the lock
        writer.execute("UPDATE jobs SET frames_done = 7")
        reader = threading.Thread(target=poll, daemon=True)
        reader.start()
        reader.join(5.0)
        assert not reader.is_alive(), "a read waited for the write lock"
        assert read["job"].frames_done == 0 and read["workspace"] == "acme" and len(read["listed"]) == 1
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    # writes still take the lock up front and are seen by the next read
    assert store.progress(store.claim("w1"), 3, 10) and store.get(job.id).frames_done == 3

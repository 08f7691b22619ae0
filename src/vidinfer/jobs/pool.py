"""The embedded mode's workers: a few processes on this machine, each keeping its models loaded.

Processes (not threads) so that decoding and inference of several jobs run in
parallel and a crash in a decoder takes down one worker, not the server. A
monitor restarts a dead worker and puts its job back in the queue (or fails it
after ``max_attempts``). Workers die with the server (``PR_SET_PDEATHSIG``, and
a parent check between batches), so a killed server leaves no orphan running.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess

from vidinfer.config import Settings
from vidinfer.errors import StorageFull

log = logging.getLogger(__name__)

#: seconds an idle worker waits before looking for work again
IDLE_POLL = 0.25
#: seconds a worker waits before claiming again when the database's disk is full
FULL_WAIT = 2.0


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent check between batches remains
        pass


def worker_main(settings: Settings, worker_id: str, parent_pid: int) -> None:
    """A worker process: claim a job, run it, repeat, until the parent goes away."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the server, which stops us
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {worker_id} %(levelname)s %(name)s: %(message)s")
    from vidinfer.jobs.runner import Runner, parent_alive
    from vidinfer.jobs.store import JobStore
    from vidinfer.models.registry import ModelRegistry
    from vidinfer.storage import open_store

    runner = Runner(settings, JobStore(settings.database), open_store(settings),
                    ModelRegistry.from_settings(settings),
                    alive=parent_alive(parent_pid))
    from vidinfer.jobs.renders import RenderStore, run_render

    renders = RenderStore(runner.store, settings.max_attempts)
    while runner.alive():
        try:
            job = runner.store.claim(worker_id)
            render = renders.claim(worker_id) if job is None else None  # renders of finished jobs, if no job
        except StorageFull as exc:  # the database cannot take the claim: wait for space, do not crash-loop
            log.warning("cannot claim work: %s", exc.message)
            time.sleep(FULL_WAIT)
            continue
        if job is None:
            if render is not None:
                log.info("render of job %s: attempt %d", render.job_id, render.attempts)
                run_render(runner, renders, render)
                continue
            time.sleep(IDLE_POLL)
            continue
        log.info("job %s: attempt %d", job.id, job.attempts)
        runner.run(job)


class WorkerPool:
    """``count`` worker processes, restarted when one dies."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold threads or CUDA
        self._procs: dict[str, BaseProcess] = {}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(f"w{os.getpid()}-{i}")
        self._monitor = threading.Thread(target=self._watch, name="vidinfer-pool", daemon=True)
        self._monitor.start()

    def _spawn(self, worker_id: str) -> None:
        proc = self._ctx.Process(target=worker_main, args=(self.settings, worker_id, os.getpid()),
                                 name=f"vidinfer-{worker_id}", daemon=True)
        proc.start()
        self._procs[worker_id] = proc

    def _watch(self) -> None:
        from vidinfer.jobs.store import JobStore

        store = JobStore(self.settings.database)
        while not self._stop.wait(1.0):
            for worker_id, proc in list(self._procs.items()):
                if proc.is_alive() or self._stop.is_set():
                    continue
                try:
                    requeued, failed = store.requeue_running(self.settings.max_attempts, worker=worker_id)
                except Exception as exc:  # noqa: BLE001 - a full disk or a locked database: next round
                    log.warning("worker %s died; its jobs cannot be requeued yet (%s)", worker_id, exc)
                    continue  # restarted once its jobs are requeued, so none is left "running" behind it
                log.warning("worker %s died (exit %s); jobs requeued %d, failed %d; restarting it",
                            worker_id, proc.exitcode, requeued, failed)
                self._spawn(worker_id)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for proc in self._procs.values():
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()

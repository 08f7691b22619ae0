"""Where a status poll's CPU goes: ``GET /videoinfer?job_id=`` in process, under cProfile.

Builds ``create_app`` over a temporary data directory (SQLite), makes a key and
one finished job (written through the store, as a worker would), and calls the
ASGI app ``--n`` times directly (a bare HTTP scope, no socket, no HTTP client): the
figures are the app's own (routing, auth, SQL, response), not uvicorn's nor a
client's. Prints the process's CPU ms per poll. cProfile sees only the event
loop's thread (a sync route runs in a worker thread): for the whole picture run it
under py-spy, ``py-spy record -f raw -o prof.txt -- python bench/profile_status.py --no-profile``.

Run: ``.venv/bin/python bench/profile_status.py [--n 2000] [--top 30]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from vidinfer.api.app import create_app
from vidinfer.config import Settings
from vidinfer.jobs.store import JobStore

COCO = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]


def finished_job(store: JobStore, workspace: str) -> str:
    """A job through the store's own path: created, claimed, finished with a result key."""
    job, _ = store.create(workspace, input_url="https://example.com/v.mp4", infer_fps="1", models=COCO)
    claimed = store.claim("bench")
    assert claimed is not None and claimed.id == job.id
    store.finish(claimed, f"results/{job.id}.json", {"null_frames": 0, "frames": 2})
    return job.id


async def poll(app: object, query: bytes, n: int) -> None:
    """``n`` status calls straight into the ASGI app, each checked for a 200."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/videoinfer", "raw_path": b"/videoinfer", "query_string": query, "root_path": "",
             "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    for _ in range(n):
        sent.clear()
        await app(dict(scope), receive, send)  # type: ignore[operator]
        if sent[0]["status"] != 200:
            raise RuntimeError(f"status call answered {sent[0]['status']}: {sent[1:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="status calls profiled")
    parser.add_argument("--top", type=int, default=30, help="functions listed")
    parser.add_argument("--no-profile", action="store_true", help="only time the calls (no cProfile overhead)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidinfer-prof-") as tmp:
        settings = Settings(data_dir=Path(tmp), public_url="http://testserver", secret_key="prof",
                            status_rate_per_minute=0)
        store = JobStore(settings.database)
        key = store.create_key("prof")
        job_id = finished_job(store, "prof")
        app = create_app(settings, store)
        query = urlencode({"api_key": key, "job_id": job_id}).encode()
        asyncio.run(poll(app, query, 200))  # warm: first-call costs (imports, caches) out of the figures
        profiler = None if args.no_profile else cProfile.Profile()
        t0 = time.process_time()
        if profiler:
            profiler.enable()
        asyncio.run(poll(app, query, args.n))
        if profiler:
            profiler.disable()
        cpu = time.process_time() - t0
        print(f"{args.n} polls: {1000 * cpu / args.n:.3f} ms CPU per poll (ASGI app called directly, "
              f"{'with' if profiler else 'without'} cProfile)")
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()

"""Scale benchmark: the distributed mode with 1 and 2 worker processes, and its overhead.

On real services on loopback (RabbitMQ 127.0.0.1:5672 with a queue of its own, a fresh
PostgreSQL database, SeaweedFS for the blobs; see bench/cluster.py), one distributed
``vidinfer serve`` (the API alone) and ``vidinfer worker --concurrency 1`` processes, each
worker standing for one machine:

(a) one long video (default: 10 min 640x360 H.264 30 fps, GOP 250) with the built-in ``coco``
    at ``--long-fps`` (1), split into chunks of ``--chunk-seconds`` (60 s: 10 chunks), through
    1 worker process and then through 2 (fresh workers each time, so each loads its model once);
(b) a batch of ``--batch`` (8) short videos (20 s, the same clip uploaded 8 times) at
    ``--batch-fps`` (2), all submitted at once, through 1 and through 2 workers;
(c) one short job (the 20 s clip at 1 fps), submit to done, distributed (1 worker) against the
    embedded mode (``vidinfer serve`` without a broker: SQLite, local files, 1 worker), alternated,
    after one cold job each: the median of ``--repeat`` (5);
and, for reference, the long video through the embedded mode's single worker (one pass, no chunks).

Times are submit to done as a client sees them (status polled every 0.1 s), plus the job
store's own timestamps; chunk task times come from the workers' Celery logs. Also measured,
for the per-chunk overhead: loading the model, downloading the input from S3 (every chunk
copies the whole input), and decoding one GOP (a chunk's seek lands on the keyframe before it).

Run: ``.venv/bin/python bench/bench_scale.py`` (about 15 minutes on 2 idle cores), or
``--short`` for a smoke run (a 1-minute video in 15 s chunks, 4 short jobs; nothing written).
Writes ``bench/results/scale.json`` and a time-stamped copy. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apiserver import ApiServer  # noqa: E402
from cluster import ACCESS_KEY, BUCKET, SECRET_KEY, Cluster, Seaweed, create_database, delete_queue, drop_database, reachable  # noqa: E402
from videos import CACHE, encode_rgb, repeated  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COCO = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]
SIZE, FPS, GOP = (640, 360), 30, 250
POLL = 0.1


# -- videos ------------------------------------------------------------------------------
def clip_360p(seconds: int) -> Path:
    """A 640x360 30 fps H.264 clip (moving bars, a bouncing box, light noise; GOP 250), cached."""
    path = CACHE / f"scale_640x360_{seconds}s.mp4"
    if path.exists():
        return path
    w, h = SIZE
    rng = np.random.default_rng(seconds)
    noises = [rng.integers(-8, 9, size=(h, w, 3), dtype=np.int16) for _ in range(8)]
    x = np.arange(w, dtype=np.int32)

    def frames() -> Iterator[np.ndarray]:
        for i in range(FPS * seconds):
            shifted = (x + 4 * i) % w
            bars = np.stack([shifted * 255 // w, (w - shifted) * 255 // w, (shifted * 3) % 256], axis=-1)
            frame = np.broadcast_to(bars[None].astype(np.uint8), (h, w, 3)).copy()
            bx, by = (13 * i) % (w - 120), (7 * i) % (h - 120)
            frame[by: by + 120, bx: bx + 120] = (255, 255, 255)
            frame[by + 40: by + 80, bx + 20: bx + 100] = (20, 20, 160)
            yield np.clip(frame.astype(np.int16) + noises[i % len(noises)], 0, 255).astype(np.uint8)

    return encode_rgb(path, frames(), SIZE, FPS, options={
        "preset": "veryfast", "b": "1500k", "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0"})


def describe(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"file": path.name, "bytes": path.stat().st_size, "seconds": round(c.duration / 1e6, 2),
                "size": f"{s.width}x{s.height}", "fps": float(Fraction(s.average_rate)), "frames": s.frames,
                "codec": s.codec_context.name, "gop": GOP}


# -- the machine -------------------------------------------------------------------------
def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class LoadSampler:
    """The 1-minute load average every 5 s while a phase runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.samples.append(os.getloadavg()[0])
        while not self._stop.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [os.getloadavg()[0]]
        return {"min": round(min(s), 2), "mean": round(statistics.fmean(s), 2), "max": round(max(s), 2)}


# -- jobs --------------------------------------------------------------------------------
class Api:
    """Submit jobs to one server and wait for them, timing submit to done as a client sees it."""

    def __init__(self, server: ApiServer, database: str) -> None:
        from vidinfer.jobs.store import JobStore

        self.server = server
        self.http = httpx.Client(timeout=60)
        self.key = server.key("bench")
        self.store = JobStore(database)

    def upload(self, path: Path) -> str:
        return self.server.upload(self.key, path)

    def submit(self, input_url: str, infer_fps: float) -> tuple[str, float]:
        t0 = time.monotonic()
        r = self.http.post(f"{self.server.url}/videoinfer", params={"api_key": self.key},
                           json={"input_url": input_url, "infer_fps": infer_fps, "models": COCO})
        r.raise_for_status()
        return r.json()["job_id"], t0

    def wait(self, submitted: dict[str, float], timeout: float = 3600) -> dict[str, dict[str, Any]]:
        """Poll every job until each has ended; each one's submit-to-done seconds and final status."""
        pending, ended = dict(submitted), {}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still running after {timeout:.0f} s: {list(pending)}\n"
                                   f"{self.server.log_tail()}")
            for job_id, t0 in list(pending.items()):
                r = self.http.get(f"{self.server.url}/videoinfer", params={"api_key": self.key, "job_id": job_id})
                r.raise_for_status()
                status = r.json()
                if status["status"] != 1:
                    now = time.monotonic()
                    if status["status"] != 0:
                        raise RuntimeError(f"job {job_id} ended with {status}\n{self.server.log_tail()}")
                    ended[job_id] = {"seconds": now - t0, "done_at": now, "status": status}
                    del pending[job_id]
            time.sleep(POLL)
        for job_id, e in ended.items():
            job = self.store.get(job_id)
            e["queued_s"] = job.started_at - job.created_at if job.started_at else None
            e["store_s"] = job.finished_at - job.created_at
            e["stats"] = job.stats
        return ended

    def run(self, input_url: str, infer_fps: float) -> dict[str, Any]:
        job_id, t0 = self.submit(input_url, infer_fps)
        return {"job_id": job_id, **self.wait({job_id: t0})[job_id]}

    def results(self, status: dict[str, Any]) -> dict[str, Any]:
        return self.http.get(status["output_signed_url"]).json()


def without_timings(results: dict) -> dict:
    """A results file without its per-frame ``time`` values (they differ run to run)."""
    return {k: v if k.endswith("_offset") or not isinstance(v, list) else [{**e, "time": None} if e else e for e in v]
            for k, v in results.items()}


def r2(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def long_job(api: Api, url: str, fps: float, cluster: Cluster | None = None) -> dict[str, Any]:
    with LoadSampler() as load:
        out = api.run(url, fps)
    row = {"wall_s": r2(out["seconds"]), "store_s": r2(out["store_s"]), "queued_s": r2(out["queued_s"]),
           "frames": out["status"]["frames_done"], "load1": load.summary()}
    if cluster is not None:
        chunks = api.store.chunks(out["job_id"])
        row["chunks"] = len(chunks)
        row["chunk_runs"] = sum(c["runs"] for c in chunks)
    row["_status"] = out["status"]
    return row


def batch(api: Api, urls: list[str], fps: float) -> dict[str, Any]:
    with LoadSampler() as load:
        submitted = dict(api.submit(url, fps) for url in urls)
        start = min(submitted.values())
        ended = api.wait(submitted)
    turnaround = sorted(e["seconds"] for e in ended.values())
    return {"wall_s": r2(max(e["done_at"] for e in ended.values()) - start), "jobs": len(ended),
            "turnaround_s": {"min": r2(turnaround[0]), "median": r2(statistics.median(turnaround)),
                             "max": r2(turnaround[-1])},
            "frames": sum(e["status"]["frames_done"] for e in ended.values()), "load1": load.summary()}


def task_summary(logs: list[Path]) -> dict[str, Any]:
    tasks = Cluster.task_seconds(logs)
    out: dict[str, Any] = {}
    for kind, seconds in tasks.items():
        if seconds:
            out[kind] = {"count": len(seconds), "total_s": r2(sum(seconds)),
                         "median_s": r2(statistics.median(seconds)), "min_s": r2(min(seconds)),
                         "max_s": r2(max(seconds))}
    return out


# -- per-chunk overhead parts, measured in this process -----------------------------------
def model_load_s(repeat: int = 3) -> float:
    from vidinfer.models.coco import CocoSSD

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        CocoSSD()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def decode_fps(path: Path, frames: int = 1500, threads: int = 2) -> float:
    """Frames per second decoding ``path`` (no conversion), as a chunk's seek waste decodes them."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type, s.thread_count = "AUTO", threads
        t0 = time.perf_counter()
        n = 0
        for _ in c.decode(s):
            n += 1
            if n >= frames:
                break
        return n / (time.perf_counter() - t0)


def s3_download_s(s3: Seaweed, prefix: str, key: str, repeat: int = 3) -> float:
    """What every chunk does first: copy the whole input out of the bucket (vidinfer's S3Store)."""
    from vidinfer.storage.s3 import S3Store

    store = S3Store(BUCKET, prefix, endpoint=s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with store.local_copy(key):
            pass
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- the run -----------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="smoke run: small figures, nothing written")
    parser.add_argument("--long-minutes", type=int, default=10, help="the long video's length (whole minutes)")
    parser.add_argument("--long-fps", type=float, default=1.0, help="infer_fps for the long video")
    parser.add_argument("--chunk-seconds", type=float, default=60.0, help="VIDINFER_CHUNK_SECONDS")
    parser.add_argument("--batch", type=int, default=8, help="short videos in the batch")
    parser.add_argument("--short-seconds", type=int, default=20, help="each short video's length")
    parser.add_argument("--batch-fps", type=float, default=2.0, help="infer_fps for the batch")
    parser.add_argument("--repeat", type=int, default=5, help="short jobs per mode for the overhead (after 1 cold)")
    args = parser.parse_args()
    if args.short:
        args.long_minutes, args.chunk_seconds, args.batch, args.repeat, args.short_seconds = 1, 15.0, 4, 2, 5

    for port, name in ((5672, "RabbitMQ"), (5432, "PostgreSQL")):
        if not reachable(port):
            sys.exit(f"{name} is not running on 127.0.0.1:{port} (see ../shared/SERVICES.md)")
    for k in [k for k in os.environ if k.startswith("VIDINFER_")]:
        del os.environ[k]  # the benchmark sets every setting it uses

    minute = clip_360p(60)
    long_video = minute if args.long_minutes == 1 else repeated(minute, args.long_minutes)
    short_video = clip_360p(args.short_seconds)
    settings = {
        "long_video": describe(long_video), "long_infer_fps": args.long_fps,
        "VIDINFER_CHUNK_SECONDS": args.chunk_seconds, "short_video": describe(short_video),
        "batch": args.batch, "batch_infer_fps": args.batch_fps, "overhead_job_infer_fps": 1, "repeat": args.repeat,
        "model": "coco (SSD-MobileNet-v2, OpenCV DNN, 300x300)",
        "workers": "`vidinfer worker --concurrency 1` processes, one per simulated machine, started fresh for "
                   "each configuration (each loads the model once, on its first task)",
        "embedded": "`vidinfer serve` without a broker, VIDINFER_WORKERS=1: SQLite, local files",
        "services": "RabbitMQ 127.0.0.1:5672 (own queue), PostgreSQL 127.0.0.1:5432 (fresh database), "
                    "SeaweedFS S3 on loopback",
        "poll_s": POLL, "other": "VIDINFER_DECODE_THREADS and the batch size at their defaults",
    }
    print(f"long: {settings['long_video']}\nshort: {settings['short_video']}")
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "loadavg_before": loadavg()}, "settings": settings}
    extra = {"VIDINFER_STATUS_RATE_PER_MINUTE": "100000", "VIDINFER_SECRET_KEY": "bench-secret"}

    with tempfile.TemporaryDirectory(prefix="vidinfer-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        s3 = Seaweed(tmp / "seaweed")
        database = None
        cluster = embedded = None
        try:
            s3.start()
            database = create_database()
            cluster = Cluster(tmp / "cluster", database, s3, chunk_seconds=args.chunk_seconds,
                              extra_env=extra).start()
            embedded = ApiServer(tmp / "embedded", workers=1, env=extra).start()
            dist = Api(cluster.api, database)
            emb = Api(embedded, f"sqlite:///{tmp / 'embedded' / 'vidinfer.db'}")
            t0 = time.monotonic()
            long_url = dist.upload(long_video)
            upload_s = time.monotonic() - t0
            batch_urls = [dist.upload(short_video) for _ in range(args.batch)]
            short_dist = dist.upload(short_video)
            short_emb = emb.upload(short_video)
            long_key = unquote(urlsplit(long_url).path.split(f"/{cluster.queue}/", 1)[1])

            runs: dict[str, Any] = {}
            results: dict[str, Any] = {}
            for n in (1, 2):
                logs = cluster.start_workers(n)
                print(f"-- {n} worker process(es): long video ...", flush=True)
                runs[f"long_{n}w"] = long_job(dist, long_url, args.long_fps, cluster)
                results[f"long_{n}w"] = without_timings(dist.results(runs[f"long_{n}w"].pop("_status")))
                runs[f"long_{n}w"]["tasks"] = task_summary(logs)
                print(f"   {runs[f'long_{n}w']['wall_s']} s; batch of {args.batch} ...", flush=True)
                runs[f"batch_{n}w"] = batch(dist, batch_urls, args.batch_fps)
                print(f"   {runs[f'batch_{n}w']['wall_s']} s", flush=True)
                cluster.stop_workers()

            print("-- overhead: one short job, distributed (1 worker) and embedded (1 worker), alternated",
                  flush=True)
            cluster.start_workers(1)
            over: dict[str, list[float]] = {"distributed": [], "embedded": []}
            store_s: dict[str, list[float]] = {"distributed": [], "embedded": []}
            cold = {}
            for i in range(args.repeat + 1):
                for mode, api, url in (("distributed", dist, short_dist), ("embedded", emb, short_emb)):
                    out = api.run(url, 1)
                    if i == 0:
                        cold[mode] = r2(out["seconds"])
                    else:
                        over[mode].append(out["seconds"])
                        store_s[mode].append(out["store_s"])
            cluster.stop_workers()
            med = {m: statistics.median(v) for m, v in over.items()}
            runs["overhead"] = {
                "cold_first_job_s": cold,
                "median_s": {m: r2(v) for m, v in med.items()},
                "all_s": {m: [r2(x) for x in v] for m, v in over.items()},
                "store_median_s": {m: r2(statistics.median(v)) for m, v in store_s.items()},
                "distributed_minus_embedded_s": r2(med["distributed"] - med["embedded"]),
            }
            print(f"   {runs['overhead']['median_s']}", flush=True)

            print("-- embedded, 1 worker: long video (reference) ...", flush=True)
            emb_long_url = emb.upload(long_video)
            runs["long_embedded_1w"] = long_job(emb, emb_long_url, args.long_fps)
            results["embedded"] = without_timings(emb.results(runs["long_embedded_1w"].pop("_status")))
            print(f"   {runs['long_embedded_1w']['wall_s']} s", flush=True)

            parts = {"model_load_s": r2(model_load_s()),
                     "s3_download_whole_input_s": r2(s3_download_s(s3, cluster.queue, long_key)),
                     "input_bytes": long_video.stat().st_size,
                     "upload_s": r2(upload_s),
                     "decode_fps_2_threads": round(decode_fps(long_video)),
                     "decode_fps_1_thread": round(decode_fps(long_video, threads=1))}
            parts["seek_waste_max_s"] = round(GOP / parts["decode_fps_1_thread"], 3)
            runs["per_chunk_parts"] = parts
            report["results_identical_to_embedded"] = {
                k: v == results["embedded"] for k, v in results.items() if k != "embedded"}
        finally:
            for thing in (cluster, embedded):
                if thing is not None:
                    thing.stop()
            if cluster is not None:
                delete_queue(cluster.queue)
            if database is not None:
                drop_database(database)
            s3.stop()

    report["runs"] = runs
    report["derived"] = derive(runs)
    report["machine"]["loadavg_after"] = loadavg()
    report["machine"]["note"] = ("2 cores shared with other engineers' test runs: every worker, the API, "
                                 "PostgreSQL, RabbitMQ and SeaweedFS run on them; compare figures from one run")
    print_report(report)
    if args.short:
        print("(--short: nothing written)")
        return
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / "scale.json", RESULTS / f"scale-{stamp}.json"):
        path.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'scale.json'}")


def derive(runs: dict[str, Any]) -> dict[str, Any]:
    l1, l2, le = runs["long_1w"], runs["long_2w"], runs["long_embedded_1w"]
    b1, b2 = runs["batch_1w"], runs["batch_2w"]
    fixed = runs["overhead"]["distributed_minus_embedded_s"]
    chunks = l1.get("chunks") or 1
    chunk_tasks = l1["tasks"].get("chunk", {})
    return {
        "long_speedup_2w": r2(l1["wall_s"] / l2["wall_s"]),
        "batch_speedup_2w": r2(b1["wall_s"] / b2["wall_s"]),
        "long_1w_over_embedded": r2(l1["wall_s"] / le["wall_s"]),
        "fixed_overhead_per_job_s": fixed,
        # the 1-worker distributed run does the embedded run's work plus a plan, N chunk starts and a merge
        "per_chunk_overhead_s_estimate": r2((l1["wall_s"] - le["wall_s"] - fixed) / chunks),
        "chunk_task_s_sum_1w": chunk_tasks.get("total_s"),
        "chunks": chunks,
    }


def print_report(r: dict[str, Any]) -> None:
    runs, d = r["runs"], r["derived"]
    print(f"\nload {r['machine']['loadavg_before']} -> {r['machine']['loadavg_after']} on {r['machine']['cpus']} cores")
    print(f"long video ({r['settings']['long_video']['seconds']:.0f} s at {r['settings']['long_infer_fps']} fps, "
          f"{d['chunks']} chunks):")
    for k in ("long_1w", "long_2w", "long_embedded_1w"):
        print(f"  {k:18} {runs[k]['wall_s']:8.2f} s   load1 {runs[k]['load1']}")
    print(f"  speed-up 2 workers: x{d['long_speedup_2w']}; "
          f"distributed 1 worker / embedded: x{d['long_1w_over_embedded']}")
    print(f"batch of {r['settings']['batch']}:")
    for k in ("batch_1w", "batch_2w"):
        print(f"  {k:18} {runs[k]['wall_s']:8.2f} s   turnaround {runs[k]['turnaround_s']}  load1 {runs[k]['load1']}")
    print(f"  speed-up 2 workers: x{d['batch_speedup_2w']}")
    o = runs["overhead"]
    print(f"short job submit->done, median: {o['median_s']} (cold first: {o['cold_first_job_s']}); "
          f"distributed - embedded = {o['distributed_minus_embedded_s']} s")
    print(f"per chunk: estimate {d['per_chunk_overhead_s_estimate']} s; parts {runs['per_chunk_parts']}")
    print(f"results identical to the embedded single pass: {r['results_identical_to_embedded']}")


if __name__ == "__main__":
    main()

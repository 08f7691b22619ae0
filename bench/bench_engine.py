"""Engine benchmark: vidinfer end to end against its own limits and the naive loop.

On a generated 1080p30 H.264 60 s video, with the same ONNX model throughout,
at infer_fps 5 and 30, measure side by side in one run:

* ``e2e``: ``run_video`` as the CLI runs it (a decode thread beside the models,
  two batches in the models at once);
* ``decode``: decode + sample + convert only, with the pipeline's own code
  (``decode_batches``), keeping the images;
* ``infer``: inference only, on those same images, in the same batches, with the
  pipeline's own inference stage (``infer_batches``);
* ``naive``: what users write: OpenCV ``VideoCapture.read()`` of every frame,
  letterbox + ``blobFromImage`` and an ONNX Runtime session with default options
  on each sampled frame, one at a time (the same frames: every 6th at 5 fps);

and print ``limit_ratio`` = e2e wall / max(decode wall, infer wall,
(decode CPU-s + infer CPU-s) / cores) and ``naive_speedup`` = naive wall / e2e
wall. At infer_fps 5 it also times, for comparison, the schedule before
parallel batches (``one_run``: one batch at a time, ONNX Runtime's threads on every
core), end to end and inference only, and the pipeline decoding every frame
(``skip_frames=False``: non-reference frames no sample wants are decoded too). The
``rect`` row repeats infer_fps 5 with the same weights exported with a dynamic
input shape (rectangular letterbox), against the same naive run. Peak RSS of a
pipeline run on the 1-minute and a 10-minute video is measured in fresh
subprocesses. Results go to ``bench/results/engine.json`` and a time-stamped copy.

Run: ``.venv/bin/python bench/bench_engine.py`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from videos import one_minute_1080p, repeated  # noqa: E402

from vidinfer.core.model import PARALLEL_BATCHES, InferenceParams, session_threads  # noqa: E402
from vidinfer.core.pipeline import (  # noqa: E402
    PIPELINE_DECODE_THREADS,
    Batch,
    ModelRun,
    decode_batches,
    infer_batches,
    run_video,
)
from vidinfer.core.video import probe  # noqa: E402
from vidinfer.models.registry import LoadOptions, ModelRegistry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / ".cache"
BATCH = 4
#: random-weight models fire everywhere; a high threshold keeps NMS and result size realistic
CONFIDENCE = 0.9
PARAMS = InferenceParams(confidence=CONFIDENCE)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float, float]:
    """Run ``fn`` ``repeat`` times; its last result and the median wall and process-CPU seconds."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, statistics.median(walls), statistics.median(cpus)


def decode_only(info, fps: Fraction, size: tuple[int, int]) -> list[Batch]:  # noqa: ANN001
    """The pipeline's decode stage alone; the batches it would hand the models."""
    return list(decode_batches(info, [size], fps, batch_size=BATCH))


def infer_only(run: list[ModelRun], batches: list[Batch], source: tuple[int, int], parallel: int) -> int:
    """The pipeline's inference stage alone, on decoded batches."""
    return sum(len(done.batch) for done in infer_batches(batches, run, source, parallel=parallel))


def naive(video: str, model_path: str, infer_fps: int) -> list[int]:
    """The loop users write: read every frame, infer every Nth, default ORT options.

    Returns the indices of the frames it ran the model on.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    side = inp.shape[2] if isinstance(inp.shape[2], int) else 640
    cap = cv2.VideoCapture(video)
    step = round(cap.get(cv2.CAP_PROP_FPS) / infer_fps)
    index = 0
    done = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % step == 0:
            h, w = frame.shape[:2]
            scale = side / max(h, w)
            resized = cv2.resize(frame, (round(w * scale), round(h * scale)))
            canvas = np.full((side, side, 3), 114, dtype=np.uint8)
            canvas[: resized.shape[0], : resized.shape[1]] = resized
            blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True)
            out = session.run(None, {inp.name: blob})[0][0]
            scores = out[4:].max(axis=0)
            _ = out[:4, scores > CONFIDENCE]
            done.append(index)
        index += 1
    cap.release()
    return done


def peak_rss_mb(video: Path, model: str, infer_fps: int) -> dict:
    """Peak RSS (MB) and wall of one ``run_video`` in a fresh process."""
    code = (
        "import json, resource, sys, time; from fractions import Fraction;"
        "from vidinfer.core.pipeline import ModelRun, run_video; from vidinfer.core.video import probe;"
        "from vidinfer.core.model import InferenceParams; from vidinfer.models.registry import ModelRegistry;"
        f"m = ModelRegistry().load({model!r}); t = time.perf_counter();"
        f"r = run_video(probe({str(video)!r}), [ModelRun('m', m, InferenceParams(confidence={CONFIDENCE}))],"
        f" Fraction({infer_fps}));"
        "print(json.dumps({'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
        " 'samples': len(r), 'frames_decoded': r.stats['frames_decoded'], 'wall': time.perf_counter() - t}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_fps(video: Path, model_spec: str, fps: int, *, with_naive: bool, with_one_run: bool,
              with_every_frame: bool, repeat: int) -> dict:
    model = ModelRegistry().load(model_spec)
    info = probe(str(video))
    source = (info.width, info.height)
    size = model.image_size(source)
    run = [ModelRun("m", model, PARAMS)]
    load = [os.getloadavg()[0]]
    result, e2e_wall, e2e_cpu = timed(lambda: run_video(info, run, Fraction(fps), batch_size=BATCH), repeat)
    batches, dec_wall, dec_cpu = timed(lambda: decode_only(info, Fraction(fps), size), repeat)
    samples, inf_wall, inf_cpu = timed(lambda: infer_only(run, batches, source, PARALLEL_BATCHES), repeat)
    load.append(os.getloadavg()[0])
    limit = max(dec_wall, inf_wall, (dec_cpu + inf_cpu) / CORES)
    row: dict[str, Any] = {
        "infer_fps": fps, "samples": len(result), "model": Path(model_spec).name,
        "model_input": list(model.info.input_size or ()), "image_size": list(size),
        "parallel_batches": result.stats["parallel_batches"], "ort_threads": session_threads(),
        "frames_decoded": result.stats["frames_decoded"], "frames_skipped": result.stats["frames_skipped"],
        "e2e_wall": e2e_wall, "e2e_cpu": e2e_cpu, "decode_wall": dec_wall, "decode_cpu": dec_cpu,
        "infer_wall": inf_wall, "infer_cpu": inf_cpu, "limit": limit, "limit_ratio": e2e_wall / limit,
    }
    assert samples == len(result), "decode-only and e2e must see the same samples"
    if with_one_run:
        # the schedule before parallel batches: one batch at a time, ONNX Runtime threads on every core
        whole = [ModelRun("m", ModelRegistry(options=LoadOptions(threads=CORES)).load(model_spec), PARAMS)]
        one, one_wall, one_cpu = timed(
            lambda: run_video(info, whole, Fraction(fps), batch_size=BATCH, parallel_batches=1), repeat)
        assert one.frame_offset == result.frame_offset
        _, one_inf_wall, one_inf_cpu = timed(lambda: infer_only(whole, batches, source, 1), repeat)
        row.update(one_run_wall=one_wall, one_run_cpu=one_cpu, one_run_speedup=one_wall / e2e_wall,
                   one_run_infer_wall=one_inf_wall, one_run_infer_cpu=one_inf_cpu)
        load.append(os.getloadavg()[0])
    del batches
    if with_every_frame:
        every, all_wall, all_cpu = timed(
            lambda: run_video(info, run, Fraction(fps), batch_size=BATCH, skip_frames=False), repeat)
        assert every.frame_offset == result.frame_offset and every.stats["frames_skipped"] == 0
        row.update(every_frame_wall=all_wall, every_frame_cpu=all_cpu, every_frame_speedup=all_wall / e2e_wall)
        load.append(os.getloadavg()[0])
    if with_naive:
        frames, naive_wall, naive_cpu = timed(lambda: naive(str(video), model.info.source, fps), repeat)
        row.update(naive_wall=naive_wall, naive_cpu=naive_cpu, naive_speedup=naive_wall / e2e_wall,
                   naive_same_frames=frames == result.frame_offset)
        load.append(os.getloadavg()[0])
    row["loadavg_1min"] = [round(x, 2) for x in load]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(CACHE / "yolov8n.onnx"),
                        help="ONNX model with a fixed 640x640 input (the naive baseline runs it too)")
    parser.add_argument("--rect-model", default=str(CACHE / "yolov8n-dynamic.onnx"),
                        help="the same weights exported with dynamic=True (rectangular letterbox)")
    parser.add_argument("--fps", type=int, nargs="+", default=[5, 30])
    parser.add_argument("--naive-fps", type=int, nargs="*", default=[5],
                        help="infer_fps values at which to time the naive loop too (5 is needed for the ratios)")
    parser.add_argument("--repeat", type=int, default=1, help="run every measurement N times, take medians")
    parser.add_argument("--rss-fps", type=int, default=1,
                        help="infer_fps of the peak-RSS runs (1: the 10-minute run decodes all 18,000 frames "
                             "but infers 600)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-rect", action="store_true")
    args = parser.parse_args()

    video = one_minute_1080p()
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": CORES, "cpu": _cpu_name(), "platform": platform.platform()},
        "video": video.name, "model": Path(args.model).name, "batch": BATCH, "confidence": CONFIDENCE,
        "decode_threads": PIPELINE_DECODE_THREADS, "parallel_batches": PARALLEL_BATCHES,
        "ort_threads": session_threads(), "repeat": args.repeat, "rows": [],
    }
    for fps in args.fps:
        row = bench_fps(video, args.model, fps, with_naive=fps in args.naive_fps, with_one_run=fps == 5,
                        with_every_frame=fps == 5, repeat=args.repeat)
        report["rows"].append(row)
        print(_fmt(row), flush=True)
    naive5 = next((r for r in report["rows"] if r["infer_fps"] == 5 and "naive_wall" in r), None)
    if not args.skip_rect and Path(args.rect_model).exists():
        rect = bench_fps(video, args.rect_model, 5, with_naive=False, with_one_run=True, with_every_frame=True,
                         repeat=args.repeat)
        if naive5 is not None:
            rect["naive_speedup"] = naive5["naive_wall"] / rect["e2e_wall"]
        report["rect"] = rect
        print("rect", _fmt(rect), flush=True)
    if not args.skip_rss:
        long_video = repeated(video, 10)
        rss1 = peak_rss_mb(video, args.model, args.rss_fps)
        rss10 = peak_rss_mb(long_video, args.model, args.rss_fps)
        report["peak_rss"] = {"infer_fps": args.rss_fps, "1min": rss1, "10min": rss10,
                              "difference_mb": rss10["peak_rss_mb"] - rss1["peak_rss_mb"]}
        print(f"peak RSS at infer_fps {args.rss_fps}: 1 min {rss1['peak_rss_mb']:.0f} MB, "
              f"10 min {rss10['peak_rss_mb']:.0f} MB, difference "
              f"{rss10['peak_rss_mb'] - rss1['peak_rss_mb']:+.0f} MB", flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / "engine.json", RESULTS / f"engine-{stamp}.json"):
        path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS / 'engine.json'} and engine-{stamp}.json")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _fmt(row: dict) -> str:
    parts = [f"fps={row['infer_fps']}", f"samples={row['samples']}", f"input={row['image_size']}",
             f"e2e={row['e2e_wall']:.1f}s/{row['e2e_cpu']:.1f}cpu",
             f"decoded={row['frames_decoded']}+{row['frames_skipped']}skipped",
             f"decode={row['decode_wall']:.1f}s/{row['decode_cpu']:.1f}cpu",
             f"infer={row['infer_wall']:.1f}s/{row['infer_cpu']:.1f}cpu", f"limit={row['limit']:.1f}s",
             f"limit_ratio={row['limit_ratio']:.3f}"]
    if "one_run_wall" in row:
        parts += [f"one_run={row['one_run_wall']:.1f}s/{row['one_run_cpu']:.1f}cpu (x{row['one_run_speedup']:.2f}, "
                  f"infer {row['one_run_infer_wall']:.1f}s/{row['one_run_infer_cpu']:.1f}cpu)"]
    if "every_frame_wall" in row:
        parts += [f"every_frame={row['every_frame_wall']:.1f}s/{row['every_frame_cpu']:.1f}cpu "
                  f"(x{row['every_frame_speedup']:.2f})"]
    if "naive_wall" in row:
        parts += [f"naive={row['naive_wall']:.1f}s/{row['naive_cpu']:.1f}cpu"]
    if "naive_speedup" in row:
        parts += [f"naive_speedup={row['naive_speedup']:.2f}"]
    parts += [f"load={row['loadavg_1min']}"]
    return " ".join(parts)


if __name__ == "__main__":
    main()

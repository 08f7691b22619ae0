"""Engine benchmark: vidinfer end to end against its own limits and the naive loop.

On a generated 1080p30 H.264 60 s video, with the same ONNX model throughout,
at infer_fps 5 and 30, measure side by side in one run:

* ``e2e``: vidinfer's pipeline (decode thread + batched inference);
* ``decode``: decode + sample + convert only, exactly as the pipeline does;
* ``infer``: inference only, on the same converted frames;
* ``naive``: what users write: OpenCV ``VideoCapture.read()`` of every frame,
  letterbox + ``blobFromImage`` and an ONNX Runtime session with default options
  on each sampled frame, one at a time;

and print ``limit_ratio`` = e2e wall / max(decode wall, infer wall,
(decode CPU-s + infer CPU-s) / cores) and ``naive_speedup`` = naive wall / e2e
wall. Peak RSS of the pipeline on the 1-minute and a 10-minute video is measured
in fresh subprocesses. Results go to ``bench/results/engine.json``.

Run: ``.venv/bin/python bench/bench_engine.py`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from videos import one_minute_1080p, repeated  # noqa: E402

from vidinfer.core.pipeline import ModelRun, run_video  # noqa: E402
from vidinfer.core.sampling import sample_frames  # noqa: E402
from vidinfer.core.video import iter_frames, probe  # noqa: E402
from vidinfer.models.base import InferenceParams  # noqa: E402
from vidinfer.models.registry import ModelRegistry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 4
#: random-weight models fire everywhere; a high threshold keeps NMS and result size realistic
PARAMS = InferenceParams(confidence=0.9)


def timed(fn):  # noqa: ANN001, ANN201
    """Run ``fn`` and return (result, wall seconds, process CPU seconds)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def decode_only(info, fps: Fraction, size: tuple[int, int]) -> list[np.ndarray]:  # noqa: ANN001
    return [s.frame.to_rgb(size) for s in sample_frames(iter_frames(info), fps)]


def infer_only(model, frames: list[np.ndarray], source: tuple[int, int]) -> int:  # noqa: ANN001
    n = 0
    for i in range(0, len(frames), BATCH):
        n += len(model.predict(frames[i: i + BATCH], source, PARAMS))
    return n


def naive(video: str, model_path: str, infer_fps: int) -> int:
    """The loop users write: read every frame, infer every Nth, default ORT options."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    side = inp.shape[2] if isinstance(inp.shape[2], int) else 640
    cap = cv2.VideoCapture(video)
    step = round(cap.get(cv2.CAP_PROP_FPS) / infer_fps)
    index = done = 0
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
            _ = out[:4, scores > PARAMS.confidence]
            done += 1
        index += 1
    return done


def peak_rss_mb(video: Path, model: str, infer_fps: int) -> float:
    """Peak RSS of one pipeline run in a fresh process."""
    code = (
        "import resource, sys; from fractions import Fraction;"
        "from vidinfer.core.pipeline import ModelRun, run_video; from vidinfer.core.video import probe;"
        "from vidinfer.models.base import InferenceParams; from vidinfer.models.registry import ModelRegistry;"
        f"m = ModelRegistry().load({model!r});"
        f"r = run_video(probe({str(video)!r}), [ModelRun('m', m, InferenceParams(confidence=0.9))], Fraction({infer_fps}));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_fps(video: Path, model_spec: str, fps: int, with_naive: bool) -> dict:
    registry = ModelRegistry()
    model = registry.load(model_spec)
    info = probe(str(video))
    source = (info.width, info.height)
    size = model.image_size(source)
    run = [ModelRun("m", model, PARAMS)]
    result, e2e_wall, e2e_cpu = timed(lambda: run_video(info, run, Fraction(fps), batch_size=BATCH))
    frames, dec_wall, dec_cpu = timed(lambda: decode_only(info, Fraction(fps), size))
    _, inf_wall, inf_cpu = timed(lambda: infer_only(model, frames, source))
    del frames
    cores = os.cpu_count() or 1
    limit = max(dec_wall, inf_wall, (dec_cpu + inf_cpu) / cores)
    row = {
        "infer_fps": fps, "samples": len(result), "model_input": list(model.info.input_size or ()),
        "image_size": list(size),
        "e2e_wall": e2e_wall, "e2e_cpu": e2e_cpu, "decode_wall": dec_wall, "decode_cpu": dec_cpu,
        "infer_wall": inf_wall, "infer_cpu": inf_cpu, "limit": limit, "limit_ratio": e2e_wall / limit,
    }
    if with_naive:
        _, naive_wall, naive_cpu = timed(lambda: naive(str(video), model.info.source, fps))
        row.update(naive_wall=naive_wall, naive_cpu=naive_cpu, naive_speedup=naive_wall / e2e_wall)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(Path(__file__).parent / ".cache" / "yolov8n.onnx"),
                        help="ONNX model with a fixed 640x640 input (the naive baseline runs it too)")
    parser.add_argument("--rect-model", default=str(Path(__file__).parent / ".cache" / "yolov8n-dynamic.onnx"),
                        help="the same model exported with dynamic=True (rectangular letterbox)")
    parser.add_argument("--fps", type=int, nargs="+", default=[5, 30])
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()

    video = one_minute_1080p()
    rows = []
    for fps in args.fps:
        row = bench_fps(video, args.model, fps, with_naive=(fps == 5))
        rows.append(row)
        print(_fmt(row), flush=True)
    report: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "video": str(video.name), "model": Path(args.model).name, "rows": rows}
    if Path(args.rect_model).exists():
        rect = bench_fps(video, args.rect_model, 5, with_naive=False)
        naive5 = next(r for r in rows if r["infer_fps"] == 5)
        rect["naive_speedup"] = naive5["naive_wall"] / rect["e2e_wall"]
        report["rect"] = rect
        print("rect", _fmt(rect), flush=True)
    if not args.skip_rss:
        long_video = repeated(video, 10)
        rss1 = peak_rss_mb(video, args.model, 5)
        rss10 = peak_rss_mb(long_video, args.model, 5)
        report["peak_rss_mb"] = {"1min": rss1, "10min": rss10, "difference": rss10 - rss1}
        print(f"peak RSS: 1 min {rss1:.0f} MB, 10 min {rss10:.0f} MB, difference {rss10 - rss1:+.0f} MB")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / "engine.json", RESULTS / f"engine-{stamp}.json"):
        path.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'engine.json'}")


def _fmt(row: dict) -> str:
    parts = [f"fps={row['infer_fps']}", f"samples={row['samples']}", f"e2e={row['e2e_wall']:.1f}s/{row['e2e_cpu']:.1f}cpu",
             f"decode={row['decode_wall']:.1f}s/{row['decode_cpu']:.1f}cpu",
             f"infer={row['infer_wall']:.1f}s/{row['infer_cpu']:.1f}cpu", f"limit={row['limit']:.1f}s",
             f"limit_ratio={row['limit_ratio']:.3f}"]
    if "naive_wall" in row:
        parts += [f"naive={row['naive_wall']:.1f}s"]
    if "naive_speedup" in row:
        parts += [f"naive_speedup={row['naive_speedup']:.2f}"]
    return " ".join(parts)


if __name__ == "__main__":
    main()

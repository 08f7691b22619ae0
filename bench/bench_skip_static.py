"""``skip_static`` on CCTV-like footage against plain sampling, side by side in one run.

The video: a fixed camera on a real photo (scikit-image's ``coffee``) with fresh sensor noise on every
frame and a slow lighting drift, where a cat (``chelsea``) walks in, crosses and leaves, and later a
person (``astronaut``) does the same. The built-in ``coco`` detector runs over it plainly and with
``skip_static`` at several thresholds; for each: samples inferred, wall time against plain, and the
detections that differ from plain's (matched per sample, same class, IoU >= 0.5).

    .venv/bin/python bench/bench_skip_static.py [--seconds 60] [--fps 5]

Writes bench/results/skip_static.json (and a time-stamped copy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))

from vidinfer.core.pipeline import ModelRun, run_video  # noqa: E402
from vidinfer.core.video import probe  # noqa: E402
from vidinfer.inference import ModelRequest, resolve_runs  # noqa: E402
from vidinfer.models.registry import ModelRegistry  # noqa: E402
from vidinfer.wire import results_to_json  # noqa: E402

SIZE, FPS = (640, 360), 30
THRESHOLDS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0)


def _visitor(photo: np.ndarray, height: int) -> np.ndarray:
    scale = height / photo.shape[0]
    return cv2.resize(photo, (int(photo.shape[1] * scale), height), interpolation=cv2.INTER_AREA)


def build_video(path: Path, seconds: int) -> Path:
    """A fixed camera: background + noise + drift; two visitors crossing, 5 s each."""
    from skimage import data

    background = cv2.resize(data.coffee(), SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    cat, person = _visitor(data.chelsea(), 180), _visitor(data.astronaut(), 220)
    visits = [(cat, 0.3 * seconds, 5.0, 150), (person, 0.65 * seconds, 5.0, 120)]  # sprite, start s, length, y
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "23"})
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(seconds * FPS):
            t = i / FPS
            frame = background * (1.0 + 0.04 * t / seconds) + rng.normal(0, 2.5, background.shape)
            for sprite, start, length, y in visits:
                if start <= t < start + length:
                    x = int(-sprite.shape[1] + (SIZE[0] + sprite.shape[1]) * (t - start) / length)
                    x0, x1 = max(0, x), min(SIZE[0], x + sprite.shape[1])
                    if x1 > x0:
                        h = min(sprite.shape[0], SIZE[1] - y)
                        frame[y:y + h, x0:x1] = sprite[:h, x0 - x:x1 - x]
            rgb = np.clip(frame, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _corners(p: dict) -> tuple[float, float, float, float]:
    return p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["x"] + p["width"] / 2, p["y"] + p["height"] / 2


def _iou(a: dict, b: dict) -> float:
    ax0, ay0, ax1, ay1 = _corners(a)
    bx0, by0, bx1, by1 = _corners(b)
    w, h = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = w * h
    union = a["width"] * a["height"] + b["width"] * b["height"] - inter
    return inter / union if union > 0 else 0.0


def differing(plain: list, other: list, iou: float = 0.5, confidences: list | None = None) -> tuple[int, int]:
    """Detections (over all samples) of either side without a same-class partner at ``iou``; and samples
    where any differs. ``confidences`` collects the unmatched detections' confidences."""
    count, samples = 0, 0
    for a, b in zip(plain, other):
        left, right = list(a["predictions"]), list(b["predictions"])
        unmatched = 0
        for p in left:
            best = max(((q, _iou(p, q)) for q in right if q["class"] == p["class"]), key=lambda m: m[1],
                       default=(None, 0.0))
            if best[0] is not None and best[1] >= iou:
                right.remove(best[0])
            else:
                unmatched += 1
                if confidences is not None:
                    confidences.append(p["confidence"])
        unmatched += len(right)
        if confidences is not None:
            confidences.extend(q["confidence"] for q in right)
        count += unmatched
        samples += unmatched > 0
    return count, samples


def _cpu_flags() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "lscpu unavailable"
    line = next((ln for ln in text.splitlines() if ln.startswith("Flags:")), "")
    wanted = ("avx", "avx2", "avx512f", "avx512_vnni", "fma", "sse4_2", "amx_tile")
    return " ".join(f for f in line.split()[1:] if f in wanted)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--fps", type=float, default=5)
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the best wall counts")
    args = parser.parse_args()
    cache = ROOT / ".cache"
    cache.mkdir(exist_ok=True)
    video = cache / f"cctv_{args.seconds}s.mp4"
    if not video.exists():
        build_video(video, args.seconds)
    info = probe(str(video))
    runs: list[ModelRun] = resolve_runs(ModelRegistry(), [ModelRequest("coco", "coco")])
    fps = Fraction(str(args.fps))
    load_before = os.getloadavg()
    run_video(info, runs, fps, end=2.0)  # warm the model up
    rows, plain_json, plain_wall, flicker = [], None, [], (0, 0)
    for _ in range(args.repeats):  # plain and every threshold, alternating: the best wall of each
        for threshold in (None, *args.thresholds):
            t0 = time.perf_counter()
            result = run_video(info, runs, fps, skip_static=threshold)
            wall = time.perf_counter() - t0
            data = results_to_json(result)["coco"]
            if threshold is None:
                if plain_json is None:  # the model's own flicker: each plain sample against the one before
                    flicker = differing(data[:-1], data[1:])
                plain_json = data
                plain_wall.append(wall)
                continue
            row = next((r for r in rows if r["threshold"] == threshold), None)
            if row is None:
                confidences: list[float] = []
                diff, diff_samples = differing(plain_json, data, confidences=confidences)
                row = {"threshold": threshold, "samples": len(result),
                       "samples_inferred": result.stats["samples_inferred"],
                       "samples_reused": result.stats["samples_reused"], "walls": [],
                       "detections_plain": sum(len(e["predictions"]) for e in plain_json),
                       "detections_differing": diff, "samples_differing": diff_samples,
                       "differing_max_confidence": max(confidences, default=None),
                       "differing_median_confidence": float(np.median(confidences)) if confidences else None}
                rows.append(row)
            row["walls"].append(wall)
    best_plain = min(plain_wall)
    print(f"{info.width}x{info.height} {float(info.duration):.0f} s at {args.fps:g} fps; plain: "
          f"{rows[0]['samples']} samples inferred, {best_plain:.2f} s wall")
    print("threshold  inferred  reused  wall/plain  detections differing (of plain's)  samples differing")
    for row in rows:
        row["wall_seconds"] = round(min(row.pop("walls")), 3)
        row["wall_ratio"] = round(row["wall_seconds"] / best_plain, 3)
        print(f"{row['threshold']:>9g}  {row['samples_inferred']:>8}  {row['samples_reused']:>6}  "
              f"{row['wall_ratio']:>10.3f}  {row['detections_differing']:>6} ({row['detections_plain']})"
              f"{row['samples_differing']:>27}")
    print(f"plain against itself, each sample against the one before: {flicker[0]} detections differ, "
          f"on {flicker[1]} samples (the model's own flicker on noise)")
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; cpu flags: {_cpu_flags()}")
    report = {"video": {"width": info.width, "height": info.height, "seconds": args.seconds, "fps": FPS},
              "infer_fps": args.fps, "model": "coco", "plain_wall_seconds": round(best_plain, 3),
              "plain_flicker": {"detections": flicker[0], "samples": flicker[1]},
              "rows": rows, "loadavg_1min": [round(load_before[0], 2), round(load_after[0], 2)],
              "cpu_flags": _cpu_flags(), "cores": os.cpu_count()}
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    text = json.dumps(report, indent=2)
    (out / "skip_static.json").write_text(text)
    (out / f"skip_static-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)


if __name__ == "__main__":
    main()

"""Built-in models benchmark: what each costs per frame, alone and through the pipeline.

One 1280x720 scene holds something for every built-in: the astronaut (a person,
a face looking at the camera), the cat, the coffee cup and a street sign with
text (scikit-image's photos, the sign drawn with OpenCV). For each built-in:

* ``load_s``: loading the model;
* ``predict_ms``: one frame, already at the size the model asks for (the
  pipeline's conversion excluded), median and 90th percentile of ``--repeat``
  runs after a warm-up; ``predict_batch4_ms``: per frame, in batches of 4 (the
  pipeline's default batch);
* ``e2e_fps``: frames per second of ``run_inference`` over a 720p H.264 video
  of the scene (decode, sample, convert, infer, serialise), at ``e2e_infer_fps``.

``ocr`` is also timed at 640x360 (read at 2x for small text) and against
RapidOCR's own defaults on the same frames (``baseline_rapidocr_ms``), which
size the image the same way: the ratio shows what vidinfer adds. ``clip`` has
no weights here: it runs a tiny graph of CLIP's signature (the one the tests
build), so its figure is CLIP's preprocessing (PIL bicubic resize, crop,
normalise) and plumbing only; a real ViT-B/32 image encoder adds its own cost.

Run: ``.venv/bin/python bench/bench_models.py`` (about 3 minutes on 2 cores);
results go to ``bench/results/models.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from vidinfer.core.model import InferenceParams, Model  # noqa: E402
from vidinfer.inference import ModelRequest, resolve_runs, run_inference  # noqa: E402
from vidinfer.models.registry import LoadOptions, ModelRegistry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (1280, 720)
BUILTINS = ("coco", "imagenet", "pose", "gaze", "ocr")
#: OCR reads a frame in seconds: sample it sparsely end to end
E2E_FPS = {"ocr": Fraction(1, 2)}
SIGN = [("EXIT 42 NORTH", 1.2, 3), ("Platform 9", 0.9, 2), ("Open daily 6-23", 0.5, 1)]


def scene(size: tuple[int, int] = SIZE) -> np.ndarray:
    """The astronaut, the cat, the coffee and a sign, on a grey 1280x720 canvas (scaled to ``size``)."""
    canvas = np.full((720, 1280, 3), 110, dtype=np.uint8)
    canvas[100:612, 40:552] = data.astronaut()
    canvas[60:360, 600:1051] = data.chelsea()
    coffee = cv2.resize(data.coffee(), (300, 200), interpolation=cv2.INTER_AREA)
    canvas[420:620, 600:900] = coffee
    cv2.rectangle(canvas, (930, 400), (1260, 600), (245, 245, 240), -1)
    for i, (text, scale, thickness) in enumerate(SIGN):
        cv2.putText(canvas, text, (945, 450 + 55 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 30, 120), thickness,
                    cv2.LINE_AA)
    return canvas if size == (1280, 720) else cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)


def scene_video(path: Path, seconds: int = 8, fps: int = 10) -> Path:
    """A 720p H.264 video of the scene drifting slowly (every frame differs, as in real video)."""
    base = scene()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(seconds * fps):
            frame = np.roll(base, i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def timings(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm-up: first runs allocate
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def paired(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` alternately, so that a change in the machine's load hits both alike."""
    a(), b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((a, times[0]), (b, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return times


def summary(seconds: Sequence[float], per: int = 1) -> dict[str, float]:
    ms = sorted(s * 1000 / per for s in seconds)
    return {"median": round(statistics.median(ms), 2), "p90": round(ms[int(0.9 * (len(ms) - 1))], 2),
            "runs": len(ms)}


def bench_model(name: str, model: Model, load_s: float, repeat: int, video: Path,
                registry: ModelRegistry, frame_size: tuple[int, int] = SIZE) -> dict[str, Any]:
    frame = scene(frame_size)
    size = model.image_size(frame_size)
    image = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if size[0] <= frame_size[0] else cv2.INTER_LINEAR)
    params = InferenceParams()
    n = max(2, repeat // 3) if name == "ocr" else repeat
    one = timings(lambda: model.predict([image], frame_size, params), n)
    four = timings(lambda: model.predict([image] * 4, frame_size, params), max(2, n // 4))
    e2e_fps = E2E_FPS.get(name, Fraction(2))
    runs = resolve_runs(registry, [ModelRequest(name, name)])
    t0 = time.perf_counter()
    out = run_inference(str(video), runs, e2e_fps)
    wall = time.perf_counter() - t0
    return {
        "model": name,
        "task": model.info.task,
        "frame": list(frame_size),
        "model_input": list(size),
        "load_s": round(load_s, 2),
        "predict_ms": summary(one),
        "predict_batch4_ms": summary(four, per=4),
        "e2e_infer_fps": float(e2e_fps),
        "e2e_frames": len(out.result),
        "e2e_fps": round(len(out.result) / wall, 2),
    }


def bench_ocr_extra(model: Model, repeat: int) -> dict[str, Any]:
    """OCR at 640x360 and 1280x720, vidinfer's adapter against RapidOCR's defaults on the same frame."""
    from rapidocr import RapidOCR

    baseline = RapidOCR(params={"Global.log_level": "error"})
    out = {}
    for frame_size in ((640, 360), SIZE):
        frame = scene(frame_size)
        size = model.image_size(frame_size)
        image = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        ours, theirs = paired(lambda: model.predict([image], frame_size, InferenceParams()),
                              lambda: baseline(bgr), max(2, repeat // 3))
        text = list(model.predict([image], frame_size, InferenceParams())[0].text)
        out[f"{frame_size[0]}x{frame_size[1]}"] = {
            "read_at": list(size),
            "vidinfer_ms": summary(ours),
            "baseline_rapidocr_ms": summary(theirs),
            "ratio_vs_baseline": round(statistics.median(ours) / statistics.median(theirs), 2),
            "text_read": text,
        }
    return out


def bench_clip(repeat: int, video: Path) -> dict[str, Any]:
    """CLIP's preprocessing and plumbing on a tiny graph of its signature (no weights exist here)."""
    from test_clip import image_encoder, text_encoder

    from vidinfer.models.clip_tokenizer import ClipTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image_encoder(folder / "vision_model.onnx")
        text_encoder(folder / "text_model.onnx", ClipTokenizer.bundled())
        registry = ModelRegistry(options=LoadOptions(clip_dir=folder))
        t0 = time.perf_counter()
        model = registry.load("clip")
        load_s = time.perf_counter() - t0
        row = bench_model("clip", model, load_s, repeat, video, registry)
        tokenizer = ClipTokenizer.bundled()
        prompts = [f"a photo of a {w}" for w in ("cat", "dog", "person on a bicycle", "red car", "street sign")]
        row["tokenize_5_prompts_ms"] = summary(timings(lambda: tokenizer(prompts), repeat))
    row["note"] = ("tiny random graph of CLIP's signature: preprocessing (PIL bicubic resize of the frame, "
                   "centre crop, normalise) and plumbing only, not a real CLIP encoder's cost")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=12, help="timed runs per model (OCR: a third)")
    parser.add_argument("--models", nargs="+", default=[*BUILTINS, "clip"])
    args = parser.parse_args()
    load_before = list(os.getloadavg())
    threads = int(os.environ.get("VIDINFER_ORT_THREADS", "0"))
    registry = ModelRegistry(options=LoadOptions(threads=threads))
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = scene_video(Path(tmp) / "scene720.mp4")
        for name in args.models:
            if name == "clip":
                rows.append(bench_clip(args.repeat, video))
            else:
                t0 = time.perf_counter()
                model = registry.load(name)
                load_s = time.perf_counter() - t0
                rows.append(bench_model(name, model, load_s, args.repeat, video, registry))
                if name == "ocr":
                    extra["ocr_sizes"] = bench_ocr_extra(model, args.repeat)
            row = rows[-1]
            print(f"{row['model']:<9} input {row['model_input']!s:<13} predict {row['predict_ms']['median']:>8.1f} ms"
                  f" (p90 {row['predict_ms']['p90']:.1f}), batch-4 {row['predict_batch4_ms']['median']:>8.1f} ms/frame,"
                  f" e2e {row['e2e_fps']:>6.2f} frames/s, load {row['load_s']:.1f} s", flush=True)
    for size, figures in extra.get("ocr_sizes", {}).items():
        print(f"ocr {size}: read at {figures['read_at']}, {figures['vidinfer_ms']['median']:.0f} ms vs RapidOCR "
              f"defaults {figures['baseline_rapidocr_ms']['median']:.0f} ms (ratio {figures['ratio_vs_baseline']}); "
              f"read {figures['text_read']}")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    # other work on the machine inflates every figure: compare runs with similar loads only
                    "load_average_before": load_before, "load_average_after": list(os.getloadavg())},
        "frame": list(SIZE),
        "models": rows,
        **extra,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / "models.json", RESULTS / f"models-{stamp}.json"):
        path.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'models.json'}")


if __name__ == "__main__":
    main()

"""Drawing predictions from a results JSON onto video frames (supervision annotators).

Works from the results file alone, so any finished job can be rendered. Frames
between two samples show the latest sampled predictions (carried forward).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from vidinfer.core.video import iter_frames, probe


def _detections(entry: dict[str, Any] | None):  # noqa: ANN202 - supervision imported lazily
    import supervision as sv

    preds = [p for p in (entry or {}).get("predictions", []) if isinstance(p, dict) and "x" in p]
    if not preds:
        return sv.Detections.empty(), []
    xyxy = np.array([[p["x"] - p["width"] / 2, p["y"] - p["height"] / 2,
                      p["x"] + p["width"] / 2, p["y"] + p["height"] / 2] for p in preds], dtype=np.float32)
    det = sv.Detections(
        xyxy=xyxy,
        confidence=np.array([p["confidence"] for p in preds], dtype=np.float32),
        class_id=np.array([p["class_id"] for p in preds], dtype=int),
    )
    labels = [f"{p['class']} {p['confidence']:.2f}" for p in preds]
    return det, labels


def annotate(rgb: np.ndarray, entry: dict[str, Any] | None) -> np.ndarray:
    """Draw one results entry's boxes and labels onto an RGB frame (returns a copy)."""
    import supervision as sv

    det, labels = _detections(entry)
    scene = rgb.copy()
    if len(det) == 0:
        return scene
    thickness = max(2, round(min(rgb.shape[:2]) / 240))
    scene = sv.BoxAnnotator(thickness=thickness).annotate(scene, det)
    return sv.LabelAnnotator(text_scale=max(0.4, min(rgb.shape[:2]) / 900),
                             text_position=sv.Position.TOP_LEFT, smart_position=True).annotate(scene, det, labels=labels)


def render_video(video: str, results: dict[str, Any], model_key: str, output: Path,
                 on_frame: Callable[[int, int], None] | None = None) -> Path:
    """Write an H.264 MP4 of ``video`` with ``model_key``'s predictions drawn on every frame."""
    info = probe(video)
    offsets: list[int] = results["frame_offset"]
    entries: list[Any] = results[model_key]
    output.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(output), "w") as out:
        stream = out.add_stream("libx264", rate=info.fps)
        stream.width, stream.height = info.width - info.width % 2, info.height - info.height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for decoded in iter_frames(info):
            i = bisect.bisect_right(offsets, decoded.index) - 1
            entry = entries[i] if i >= 0 else None
            rgb = annotate(decoded.to_rgb()[: stream.height, : stream.width], entry)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
            if on_frame is not None:
                on_frame(decoded.index + 1, info.frame_count)
        for packet in stream.encode():
            out.mux(packet)
    return output

"""The Roboflow-compatible results JSON, built from core results.

Shape (see CONTRACT.md): ``{"frame_offset": [...], "time_offset": [...],
"<model_id>": [entry | null, ...]}``, one entry per sample. Boxes are centre
``x``, ``y``, ``width``, ``height`` in source pixels.

One extension key, ``"video"``, says which video the samples come from (size, frames, duration,
fps): ``vidinfer render`` checks it against the video it draws on. It is an object, never a list,
so clients that take every list-valued key for a model column are not misled.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from vidinfer.core.results import (
    Classification,
    Detections,
    Embedding,
    FramePrediction,
    Gazes,
    TextLines,
    VideoResult,
)
from vidinfer.core.tracking import ANALYSIS_KEYS
from vidinfer.core.video import VideoInfo

#: deterministic detection ids: the same job gives the same ids, chunked or not
_ID_NAMESPACE = uuid.UUID("6f1c1c52-5b7e-4c55-9a53-3f0f6a1d2f10")

#: the extension key that describes the source video (see ``video_json``)
VIDEO_KEY = "video"
#: top-level keys that are not models: the offsets, the source video, tracking's and counting's summaries
RESERVED_KEYS = ("frame_offset", "time_offset", VIDEO_KEY, *ANALYSIS_KEYS)


def model_columns(results: Mapping[str, Any]) -> list[str]:
    """The keys of a results file that are model columns (one entry per sample): every list-valued key
    but the reserved ones. The one test of it, for exports and whatever else reads results files."""
    return [key for key, value in results.items() if key not in RESERVED_KEYS and isinstance(value, list)]


def video_json(info: VideoInfo) -> dict[str, Any]:
    """What the results say about their video: enough for a render to refuse another video."""
    return {"width": info.width, "height": info.height, "frame_count": info.frame_count,
            "duration": round(float(info.duration), 4), "fps": round(float(info.fps), 4)}


def results_to_json(result: VideoResult, info: VideoInfo | None = None) -> dict[str, Any]:
    """The results file a client downloads; with ``info``, its ``video`` key describes the source."""
    out: dict[str, Any] = {"frame_offset": list(result.frame_offset), "time_offset": list(result.time_offset)}
    if info is not None:
        out[VIDEO_KEY] = video_json(info)
    for key, column in result.predictions.items():
        out[key] = [
            None if pred is None else prediction_to_json(pred, key, result.frame_offset[i])
            for i, pred in enumerate(column)
        ]
    return out


def prediction_to_json(pred: FramePrediction, key: str = "", frame_index: int = 0) -> dict[str, Any]:
    """One model's entry for one frame, in the hosted API's shape for its task."""
    width, height = pred.image_size
    base: dict[str, Any] = {"time": round(pred.inference_time, 6)}
    if pred.reused_from is not None:  # skip_static: not inferred, the predictions of sample ``reused_from``
        base["reused_from"] = pred.reused_from
    value = pred.value
    if isinstance(value, Embedding):
        base["embeddings"] = [[round(float(x), 6) for x in row] for row in value.vectors]
        if value.classification is not None:
            base.update(_classification(value.classification))
        return base
    base["image"] = {"width": int(width), "height": int(height)}
    if isinstance(value, Detections):
        base["predictions"] = _detections(value, key, frame_index)
    elif isinstance(value, Classification):
        base.update(_classification(value))
    elif isinstance(value, Gazes):
        base["predictions"] = _gazes(value)
        for name in ("time_face_det", "time_gaze_det"):  # the hosted response's own split of ``time``
            seconds = getattr(value, name)
            if seconds is not None:
                base[name] = round(seconds, 6)
    elif isinstance(value, TextLines):
        base["predictions"] = _text_lines(value, key, frame_index)
    else:  # pragma: no cover - exhaustive over Prediction
        raise TypeError(f"cannot serialise {type(value).__name__}")
    return base


def _detections(det: Detections, key: str, frame_index: int) -> list[dict[str, Any]]:
    preds = []
    for i in range(len(det)):
        x1, y1, x2, y2 = (float(v) for v in det.xyxy[i])
        pred: dict[str, Any] = {
            "x": round((x1 + x2) / 2, 1),
            "y": round((y1 + y2) / 2, 1),
            "width": round(x2 - x1, 1),
            "height": round(y2 - y1, 1),
            "confidence": round(float(det.confidence[i]), 4),
            "class": det.class_name[i],
            "class_id": int(det.class_id[i]),
            "detection_id": str(uuid.uuid5(_ID_NAMESPACE, f"{key}/{frame_index}/{i}")),
        }
        if det.polygons is not None:
            pred["points"] = [{"x": round(float(px), 1), "y": round(float(py), 1)} for px, py in det.polygons[i]]
        if det.keypoints is not None:
            names = det.keypoint_names or [str(k) for k in range(det.keypoints.shape[1])]
            pred["keypoints"] = [
                {"x": round(float(kx), 1), "y": round(float(ky), 1), "confidence": round(float(kc), 4),
                 "class_id": k, "class": names[k]}
                for k, (kx, ky, kc) in enumerate(det.keypoints[i])
            ]
        preds.append(pred)
    return preds


def _classification(cls: Classification) -> dict[str, Any]:
    conf = cls.confidence
    if cls.multilabel:
        return {
            "predictions": {name: {"confidence": round(float(c), 4)} for name, c in zip(cls.class_names, conf)},
            "predicted_classes": [n for n, c in zip(cls.class_names, conf) if c >= cls.threshold],
        }
    order = np.argsort(-conf, kind="stable")[: cls.top_k]
    top = int(order[0]) if len(order) else 0
    return {
        "predictions": [
            {"class": cls.class_names[int(i)], "class_id": int(i), "confidence": round(float(conf[int(i)]), 4)}
            for i in order
        ],
        "top": cls.class_names[top] if len(order) else "",
        "confidence": round(float(conf[top]), 4) if len(order) else 0.0,
    }


def _box(x1: float, y1: float, x2: float, y2: float) -> dict[str, float]:
    return {"x": round((x1 + x2) / 2, 1), "y": round((y1 + y2) / 2, 1),
            "width": round(x2 - x1, 1), "height": round(y2 - y1, 1)}


def _gazes(gazes: Gazes) -> list[dict[str, Any]]:
    """The hosted gaze-detection shape: ``{"face": {box, 6 landmarks}, "yaw", "pitch"}`` per face.

    ``class_confidence`` is null as in the hosted answer (BlazeFace has one score, ``confidence``);
    ``head_yaw``, ``head_pitch`` and ``gaze_source`` are vidinfer's additions.
    """
    out = []
    assert gazes.head_yaw is not None and gazes.head_pitch is not None and gazes.gaze_source is not None
    for i in range(len(gazes)):
        face = _box(*(float(v) for v in gazes.xyxy[i]))
        face.update({
            "confidence": round(float(gazes.confidence[i]), 4),
            "class": "face",
            "class_id": 0,
            "class_confidence": None,
            "landmarks": [{"x": round(float(px), 1), "y": round(float(py), 1)} for px, py in gazes.landmarks[i]],
        })
        out.append({"face": face, "yaw": round(float(gazes.yaw[i]), 4), "pitch": round(float(gazes.pitch[i]), 4),
                    "head_yaw": round(float(gazes.head_yaw[i]), 4),
                    "head_pitch": round(float(gazes.head_pitch[i]), 4),
                    "gaze_source": gazes.gaze_source[i]})
    return out


def _text_lines(lines: TextLines, key: str, frame_index: int) -> list[dict[str, Any]]:
    """The detection shape (axis-aligned box of the line, class "text") plus ``text`` and ``points``."""
    out = []
    for i in range(len(lines)):
        quad = lines.points[i]
        pred: dict[str, Any] = _box(float(quad[:, 0].min()), float(quad[:, 1].min()),
                                    float(quad[:, 0].max()), float(quad[:, 1].max()))
        pred.update({
            "confidence": round(float(lines.confidence[i]), 4),
            "class": "text",
            "class_id": 0,
            "detection_id": str(uuid.uuid5(_ID_NAMESPACE, f"{key}/{frame_index}/{i}")),
            "text": lines.text[i],
            "points": [{"x": round(float(px), 1), "y": round(float(py), 1)} for px, py in quad],
        })
        out.append(pred)
    return out

"""Users' own YOLO ONNX exports, configured from the file itself.

An Ultralytics export (``yolo export format=onnx``) says what it is in its ONNX
``metadata_props`` (task, class names, image size, stride, end-to-end, keypoint
shape, batch), so a user registers a file with no flags. Files without metadata
(legacy YOLOv5, hand-made exports) are understood from their output shapes where
that is unambiguous, and refused with the shapes named where it is not.

Layouts (see shared/MODELS.md):

* ``anchors``  ``[N, 4+nc+extra, A]``: cx, cy, w, h (input pixels), sigmoid class
  scores, then 32 mask coefficients (segment), K*3 keypoints (pose) or an angle
  (obb); needs NMS. YOLOv8 / 11 / 26 and v10 with a default export.
* ``end2end``  ``[N, M, 6+extra]``: x1, y1, x2, y2, score, class, extra (obb:
  cx, cy, w, h and the angle last); NMS already done (YOLO26 / v10, ``nms=False``).
* ``yolov5``   ``[N, A, 5+nc+extra]``: cx, cy, w, h, objectness, class scores.
* ``classify`` ``[N, nc]``: probabilities (softmax applied if they are logits).

Sessions are opened by ``onnx_session``, the only importer of ``onnxruntime`` in vidinfer.
"""

from __future__ import annotations

import ast
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidinfer.core.model import InferenceParams, Model, ModelInfo
from vidinfer.core.results import Classification, Detections
from vidinfer.errors import ModelError
from vidinfer.models.base import fit_within
from vidinfer.models.onnx_session import Session, describe, open_session

log = logging.getLogger(__name__)

#: Ultralytics task -> the hosted API's inference type
API_TASKS = {
    "detect": "object-detection",
    "obb": "object-detection",
    "segment": "instance-segmentation",
    "pose": "keypoint-detection",
    "classify": "classification",
}
COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
PAD_VALUE = 114
DEFAULT_IMGSZ = 640
DEFAULT_STRIDE = 32
#: candidates kept for NMS, highest scores first (Ultralytics' max_nms)
MAX_NMS = 30_000
#: end-to-end heads emit this many rows by default; YOLOv5 never has this few anchors
E2E_ROWS = 300


# -- what the file says about itself ---------------------------------------------------------------
@dataclass(frozen=True)
class ExportMetadata:
    """The Ultralytics ``metadata_props`` we use; every field may be missing."""

    task: str | None = None
    names: tuple[str, ...] | None = None
    imgsz: tuple[int, int] | None = None  # (height, width)
    stride: int = DEFAULT_STRIDE
    end2end: bool | None = None
    kpt_shape: tuple[int, int] | None = None
    kpt_names: tuple[str, ...] | None = None
    batch: int | None = None

    @classmethod
    def parse(cls, props: dict[str, str]) -> ExportMetadata:
        """Read the string properties with ``ast.literal_eval`` (never ``eval``); bad values are ignored."""
        values = {key: _literal(props, key) for key in
                  ("names", "imgsz", "stride", "end2end", "kpt_shape", "kpt_names", "batch")}
        task = props.get("task", "").strip() or None
        return cls(
            task=task,
            names=_parse_names(values["names"]),
            imgsz=_parse_imgsz(values["imgsz"]),
            stride=values["stride"] if isinstance(values["stride"], int) and values["stride"] > 0 else DEFAULT_STRIDE,
            end2end=values["end2end"] if isinstance(values["end2end"], bool) else None,
            kpt_shape=_int_pair(values["kpt_shape"]),
            kpt_names=_parse_kpt_names(values["kpt_names"]),
            batch=values["batch"] if isinstance(values["batch"], int) else None,
        )


def _literal(props: dict[str, str], key: str) -> Any:
    raw = props.get(key)
    if raw is None:
        return None
    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        log.warning("ignoring unreadable ONNX metadata %s=%.80r", key, raw)
        return None


def _parse_names(value: Any) -> tuple[str, ...] | None:
    """``{0: 'person', ...}`` (or a list) -> names by class id; gaps become the id itself."""
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    if not isinstance(value, dict) or not value:
        return None
    try:
        by_id = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        return None
    if min(by_id) < 0:
        return None
    return tuple(by_id.get(i, str(i)) for i in range(max(by_id) + 1))


def _parse_imgsz(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and value > 0:
        return value, value
    pair = _int_pair(value)
    if pair is not None:
        return pair
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return _parse_imgsz(value[0])
    return None


def _int_pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    return None


def _parse_kpt_names(value: Any) -> tuple[str, ...] | None:
    """Ultralytics writes ``{class_id: [names]}``; a plain list is accepted too."""
    if isinstance(value, dict) and value:
        value = value[min(value)]
    if isinstance(value, (list, tuple)) and value:
        return tuple(str(v) for v in value)
    return None


# -- the network's input and output ----------------------------------------------------------------
@dataclass(frozen=True)
class InputSpec:
    """The image input; ``None`` marks a dynamic (symbolic) dimension."""

    name: str
    batch: int | None
    height: int | None
    width: int | None
    dtype: type

    @property
    def dynamic_hw(self) -> bool:
        return self.height is None or self.width is None


@dataclass(frozen=True)
class Layout:
    """How to read the outputs: which head, how many classes, and the extra columns."""

    task: str  # detect | segment | pose | obb | classify
    head: str  # anchors | end2end | yolov5 | classify
    nc: int
    mask_dim: int = 0
    kpt_shape: tuple[int, int] = (0, 0)

    @property
    def extra(self) -> int:
        """Columns after the class scores (anchors, yolov5) or after score+class (end2end)."""
        return {"segment": self.mask_dim, "pose": self.kpt_shape[0] * self.kpt_shape[1], "obb": 1}.get(self.task, 0)


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _input_spec(session: Session, described: str) -> InputSpec:
    inputs = session.get_inputs()
    shape = list(inputs[0].shape) if inputs else []
    if len(inputs) != 1 or len(shape) != 4 or _dim(shape[1]) not in (None, 3):
        raise ModelError(f"unsupported ONNX model: expected one image input [N,3,H,W]; {described}",
                         code="unsupported_model")
    dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
    return InputSpec(inputs[0].name, _dim(shape[0]), _dim(shape[2]), _dim(shape[3]), dtype)


def _output_shapes(session: Session, spec: InputSpec, meta: ExportMetadata) -> list[tuple[int, ...]]:
    """Concrete output shapes at batch 1; one probe run when the graph leaves any dimension symbolic."""
    declared = [list(o.shape) for o in session.get_outputs()]
    if all(_dim(d) is not None for shape in declared for d in shape[1:]):
        return [(1, *shape[1:]) for shape in declared]
    height, width = _network_hw(spec, meta)
    probe = np.zeros((spec.batch or 1, 3, height, width), dtype=spec.dtype)
    try:
        outputs = session.run(None, {spec.name: probe})
    except Exception as exc:  # noqa: BLE001 - any runtime failure means we cannot use this file
        raise ModelError(f"the ONNX model failed on a {width}x{height} test input: {exc}",
                         code="unsupported_model") from exc
    return [(1, *np.shape(o)[1:]) for o in outputs]


def _network_hw(spec: InputSpec, meta: ExportMetadata) -> tuple[int, int]:
    """(height, width) the network was exported for: fixed dims, else ``imgsz``, else 640."""
    default = meta.imgsz or (DEFAULT_IMGSZ, DEFAULT_IMGSZ)
    return spec.height or default[0], spec.width or default[1]


# -- deciding the layout -----------------------------------------------------------------------------
def resolve_layout(shapes: Sequence[tuple[int, ...]], meta: ExportMetadata, input_hw: tuple[int, int],
                   described: str) -> Layout:
    """Match the output shapes against the known layouts, guided by the metadata."""
    def refuse(why: str) -> ModelError:
        return ModelError(f"unsupported ONNX model layout ({why}); {described}. Supported: Ultralytics "
                          "YOLO detect/segment/pose/obb/classify exports and legacy YOLOv5 [N,A,5+nc]",
                          code="unsupported_model")

    preds = [s for s in shapes if len(s) != 4]
    protos = [s for s in shapes if len(s) == 4]
    if len(preds) != 1:
        raise refuse("expected one prediction output")
    pred = preds[0]
    task = meta.task
    if task is not None and task not in API_TASKS:
        raise refuse(f"task {task!r} is not one of {', '.join(API_TASKS)}")
    if len(pred) == 2:
        if task not in (None, "classify") or protos:
            raise refuse(f"a 2-D output does not fit task {task!r}")
        _check_names(meta, pred[1], refuse)
        return Layout("classify", "classify", pred[1])
    if len(pred) != 3 or task == "classify":
        raise refuse("expected a 3-D output [N, C, A] or [N, rows, columns]")
    task = task or ("segment" if protos else "detect")
    layout = Layout(task, "", 0, protos[0][1] if protos else 0, _kpt_shape(task, meta, refuse))
    if (task == "segment") != bool(protos):
        raise refuse("segmentation needs a mask-prototype output [N,32,H/4,W/4], and only it has one")
    head = _pick_head(pred[1], pred[2], layout, meta, input_hw)
    if head is None:
        raise refuse(f"the columns do not match task {task!r} with "
                     f"{len(meta.names) if meta.names else 'an unknown number of'} classes")
    nc = {"anchors": pred[1] - 4 - layout.extra, "yolov5": pred[2] - 5 - layout.extra,
          "end2end": len(meta.names or ())}[head]
    if head != "end2end":
        _check_names(meta, nc, refuse)
    return Layout(task, head, nc, layout.mask_dim, layout.kpt_shape)


def _kpt_shape(task: str, meta: ExportMetadata, refuse: Callable[[str], ModelError]) -> tuple[int, int]:
    if task != "pose":
        return (0, 0)
    if meta.kpt_shape is None or meta.kpt_shape[1] not in (2, 3):
        raise refuse("a pose model needs kpt_shape [K, 2|3] in its metadata")
    return meta.kpt_shape


def _check_names(meta: ExportMetadata, nc: int, refuse: Callable[[str], ModelError]) -> None:
    if nc < 1:
        raise refuse("no class columns are left")
    if meta.names is not None and len(meta.names) != nc:
        raise refuse(f"the metadata names {len(meta.names)} classes but the output has {nc}")


def _pick_head(d1: int, d2: int, layout: Layout, meta: ExportMetadata, input_hw: tuple[int, int]) -> str | None:
    """Which of the three 3-D heads ``[N, d1, d2]`` is; ``None`` when none fits."""
    nc = len(meta.names) if meta.names else None
    extra = layout.extra
    # without names, only the usual orientation counts: many anchors, few channels
    fits = {
        "anchors": d1 - 4 - extra >= 1 and (d1 == 4 + nc + extra if nc else d1 < d2),
        "yolov5": layout.task in ("detect", "segment") and d2 - 5 - extra >= 1
        and (d2 == 5 + nc + extra if nc else d1 > d2),
        "end2end": d2 == 6 + extra,
    }
    if meta.end2end:
        fits = {"end2end": fits["end2end"]}
    elif meta.end2end is False and any(ok for head, ok in fits.items() if head != "end2end"):
        # `nms=True` exports say end2end=False yet emit [N, 300, 6]: trust the shape when nothing else fits
        fits["end2end"] = False
    candidates = [head for head, ok in fits.items() if ok]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if d1 < d2 and "anchors" in candidates:  # channels first: many anchors along the last axis
        return "anchors"
    if "yolov5" in candidates and (d1 in _yolov5_anchor_counts(input_hw) or "end2end" not in candidates):
        return "yolov5"
    if "end2end" in candidates and d1 <= E2E_ROWS * 4:
        return "end2end"
    return candidates[0]


def _yolov5_anchor_counts(input_hw: tuple[int, int]) -> set[int]:
    """3 anchors per cell over strides 8-32 (P5) or 8-64 (P6)."""
    h, w = input_hw
    return {3 * sum(math.ceil(h / s) * math.ceil(w / s) for s in strides)
            for strides in ((8, 16, 32), (8, 16, 32, 64))}


class _Runner:
    """Runs blobs through the session, in chunks of the fixed batch size when the export has one."""

    def __init__(self, session: Session, spec: InputSpec) -> None:
        self.session = session
        self.spec = spec

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        size = self.spec.batch
        if size is None or len(blob) == size:
            return self._run(blob)
        chunks = [self._run_padded(blob[i:i + size], size) for i in range(0, len(blob), size)]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def _run_padded(self, part: np.ndarray, size: int) -> list[np.ndarray]:
        n = len(part)
        if n < size:  # a fixed batch of 4 given 3 images: repeat the last, drop its results
            part = np.concatenate([part, np.repeat(part[-1:], size - n, axis=0)])
        return [out[:n] for out in self._run(part)]

    def _run(self, blob: np.ndarray) -> list[np.ndarray]:
        blob = blob.astype(self.spec.dtype, copy=False)
        return [np.asarray(out, dtype=np.float32) for out in self.session.run(None, {self.spec.name: blob})]


# -- geometry ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Where one resized image sits in the network input, and how its pixels map to the source frame."""

    left: int
    top: int
    scale_x: float  # source pixels per image pixel
    scale_y: float

    def to_source(self, xy: np.ndarray, source_size: tuple[int, int]) -> np.ndarray:
        """Input-pixel ``(..., 2k)`` x, y pairs -> source pixels, clipped to the frame."""
        out = np.asarray(xy, dtype=np.float32).copy()
        out[..., 0::2] = np.clip((out[..., 0::2] - self.left) * self.scale_x, 0, source_size[0])
        out[..., 1::2] = np.clip((out[..., 1::2] - self.top) * self.scale_y, 0, source_size[1])
        return out


def _letterbox(images: Sequence[np.ndarray], canvas: tuple[int, int], source_size: tuple[int, int],
               ) -> tuple[np.ndarray, list[Placement]]:
    """Centre each image on a grey canvas (Ultralytics LetterBox) as a 0-1 float32 NCHW blob."""
    width, height = canvas
    blob = np.full((len(images), 3, height, width), PAD_VALUE / 255.0, dtype=np.float32)
    placements = []
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        top, left = (height - h) // 2, (width - w) // 2
        np.multiply(image.transpose(2, 0, 1), np.float32(1 / 255.0), out=blob[i, :, top:top + h, left:left + w])
        placements.append(Placement(left, top, source_size[0] / w, source_size[1] / h))
    return blob, placements


def _round_up(value: int, stride: int) -> int:
    return -(-value // stride) * stride


# -- decoding ----------------------------------------------------------------------------------------
@dataclass
class _Candidates:
    """Rows above the threshold: boxes in input pixels, scores, class ids, extra columns."""

    boxes: np.ndarray  # (n, 4) xyxy, or (n, 5) cx, cy, w, h, angle for obb
    scores: np.ndarray
    class_ids: np.ndarray
    extra: np.ndarray  # (n, E)

    def take(self, index: np.ndarray) -> _Candidates:
        return _Candidates(self.boxes[index], self.scores[index], self.class_ids[index], self.extra[index])


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def _anchor_candidates(pred: np.ndarray, layout: Layout, threshold: float, wanted: np.ndarray | None,
                       ) -> _Candidates:
    """``[4+nc+E, A]``: threshold on the best class first, so only survivors are transposed."""
    scores = pred[4:4 + layout.nc]
    best = scores.max(axis=0)
    keep = np.flatnonzero(best >= threshold)
    rows = pred[:, keep].T
    class_ids = rows[:, 4:4 + layout.nc].argmax(axis=1) if len(keep) else np.zeros(0, dtype=np.int64)
    return _filtered(rows[:, :4], best[keep], class_ids, rows[:, 4 + layout.nc:], layout, wanted)


def _yolov5_candidates(pred: np.ndarray, layout: Layout, threshold: float, wanted: np.ndarray | None,
                       ) -> _Candidates:
    """``[A, 5+nc+E]``: score = objectness x class score."""
    rows = pred[pred[:, 4] >= threshold]  # the score can never exceed the objectness
    class_scores = rows[:, 5:5 + layout.nc] * rows[:, 4:5]
    class_ids = class_scores.argmax(axis=1) if len(rows) else np.zeros(0, dtype=np.int64)
    scores = class_scores[np.arange(len(rows)), class_ids]
    keep = scores >= threshold
    return _filtered(rows[keep, :4], scores[keep], class_ids[keep], rows[keep, 5 + layout.nc:], layout, wanted)


def _end2end_candidates(pred: np.ndarray, layout: Layout, threshold: float, wanted: np.ndarray | None,
                        ) -> _Candidates:
    """``[M, 6+E]``: boxes already xyxy (obb: cx, cy, w, h with the angle in the extra column)."""
    rows = pred[pred[:, 4] >= threshold]
    class_ids = np.rint(rows[:, 5]).astype(np.int64)
    boxes = rows[:, :4] if layout.task != "obb" else np.concatenate([rows[:, :4], rows[:, 6:7]], axis=1)
    extra = rows[:, 6:] if layout.task != "obb" else rows[:, 7:]
    candidates = _Candidates(boxes, rows[:, 4], class_ids, extra)
    return candidates if wanted is None else candidates.take(np.isin(class_ids, wanted))


def _filtered(xywh: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, extra: np.ndarray, layout: Layout,
              wanted: np.ndarray | None) -> _Candidates:
    """Anchor rows -> candidates: obb keeps its rotated box, the others become xyxy."""
    if layout.task == "obb":
        boxes, extra = np.concatenate([xywh, extra[:, :1]], axis=1), extra[:, 1:]
    else:
        boxes = _xywh_to_xyxy(xywh)
    candidates = _Candidates(boxes, scores, class_ids.astype(np.int64), extra)
    if wanted is not None:
        candidates = candidates.take(np.isin(candidates.class_ids, wanted))
    if len(candidates.scores) > MAX_NMS:
        candidates = candidates.take(np.argpartition(-candidates.scores, MAX_NMS)[:MAX_NMS])
    return candidates


def _nms(candidates: _Candidates, iou: float, max_detections: int, rotated: bool) -> np.ndarray:
    """Class-wise NMS in OpenCV; indices by descending score."""
    if len(candidates.scores) == 0:
        return np.zeros(0, dtype=np.int64)
    scores = candidates.scores.astype(np.float32)
    if rotated:
        boxes = candidates.boxes.astype(np.float64)
        offset = (np.abs(boxes[:, :2]).max() + boxes[:, 2:4].max() + 1) * 2 * candidates.class_ids
        rects = [((x + o, y), (w, h), math.degrees(a)) for (x, y, w, h, a), o in zip(boxes, offset)]
        keep = cv2.dnn.NMSBoxesRotated(rects, scores.tolist(), 0.0, iou)
    else:
        xywh = candidates.boxes.astype(np.float64).copy()
        xywh[:, 2:] -= xywh[:, :2]
        keep = cv2.dnn.NMSBoxesBatched(xywh, scores, candidates.class_ids.astype(np.int32), 0.0, iou)
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")][:max_detections]


def _top(candidates: _Candidates, max_detections: int) -> np.ndarray:
    return np.argsort(-candidates.scores, kind="stable")[:max_detections]


def _rotated_bounds(boxes: np.ndarray) -> np.ndarray:
    """cx, cy, w, h, angle (radians) -> the axis-aligned xyxy that encloses the rotated box."""
    cx, cy, w, h, angle = boxes.T
    cos, sin = np.abs(np.cos(angle)), np.abs(np.sin(angle))
    half_w = (w * cos + h * sin) / 2
    half_h = (w * sin + h * cos) / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def _mask_polygon(coefficients: np.ndarray, protos: np.ndarray, box: np.ndarray, canvas: tuple[int, int],
                  ) -> np.ndarray:
    """The largest contour of one instance mask, in input pixels.

    Only the prototype cells under the box are combined and upsampled, so the cost
    follows the box's size, not the frame's; the mask is cut to the box like
    Ultralytics' ``crop_mask``.
    """
    mask_dim, mh, mw = protos.shape
    up_x, up_y = canvas[0] / mw, canvas[1] / mh
    x1, y1, x2, y2 = (float(v) for v in box)
    px1, px2 = max(0, math.floor(x1 / up_x) - 1), min(mw, math.ceil(x2 / up_x) + 1)
    py1, py2 = max(0, math.floor(y1 / up_y) - 1), min(mh, math.ceil(y2 / up_y) + 1)
    if px2 <= px1 or py2 <= py1 or x2 <= x1 or y2 <= y1:
        return np.zeros((0, 2), dtype=np.float32)
    logits = coefficients @ protos[:, py1:py2, px1:px2].reshape(mask_dim, -1)
    size = (max(1, round((px2 - px1) * up_x)), max(1, round((py2 - py1) * up_y)))
    upsampled = cv2.resize(logits.reshape(py2 - py1, px2 - px1).astype(np.float32), size,
                           interpolation=cv2.INTER_LINEAR)
    ox, oy = px1 * up_x, py1 * up_y
    binary = np.zeros(upsampled.shape, dtype=np.uint8)
    bx1, by1 = max(0, round(x1 - ox)), max(0, round(y1 - oy))
    bx2, by2 = round(x2 - ox), round(y2 - oy)
    binary[by1:by2, bx1:bx2] = upsampled[by1:by2, bx1:bx2] > 0  # sigmoid > 0.5
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), dtype=np.float32)
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)
    return largest + np.array([ox, oy], dtype=np.float32)


# -- the models --------------------------------------------------------------------------------------
class _OnnxModel:
    """What detectors and classifiers share: the session, names and info."""

    def __init__(self, runner: _Runner, layout: Layout, meta: ExportMetadata, info: ModelInfo) -> None:
        self._runner = runner
        self.layout = layout
        self.meta = meta
        self.info = info
        self.names = info.classes
        self.network_hw = _network_hw(runner.spec, meta)

    def class_name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    def _wanted_ids(self, params: InferenceParams) -> np.ndarray | None:
        if params.classes is None:
            return None
        wanted = set(params.classes)
        ids = [i for i, name in enumerate(self.names) if name in wanted]
        ids += [int(c) for c in wanted if not self.names and c.isdigit()]
        return np.array(ids, dtype=np.int64)


class YoloDetector(_OnnxModel):
    """detect / segment / pose / obb exports; returns ``Detections`` in source pixels."""

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        height, width = self.network_hw
        return fit_within(source_size, (width, height))

    def _canvas(self, images: Sequence[np.ndarray]) -> tuple[int, int]:
        """Fixed exports: the fixed size. Dynamic ones: pad only to the stride (rectangular letterbox)."""
        if not self._runner.spec.dynamic_hw:
            return self._runner.spec.width or 0, self._runner.spec.height or 0
        stride = self.meta.stride
        return (_round_up(max(im.shape[1] for im in images), stride),
                _round_up(max(im.shape[0] for im in images), stride))

    def _fit(self, images: Sequence[np.ndarray], source_size: tuple[int, int]) -> list[np.ndarray]:
        """Images are normally already ``image_size``; resize any that are not."""
        want = self.image_size(source_size)
        return [im if (im.shape[1], im.shape[0]) == want else cv2.resize(im, want, interpolation=cv2.INTER_LINEAR)
                for im in images]

    def predict(self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams,
                ) -> list[Detections]:
        if not images:
            return []
        images = self._fit(images, source_size)
        canvas = self._canvas(images)
        blob, placements = _letterbox(images, canvas, source_size)
        outputs = self._runner.run(blob)
        preds = next(o for o in outputs if o.ndim != 4)
        protos = next((o for o in outputs if o.ndim == 4), None)
        return [self._decode(preds[i], None if protos is None else protos[i], placements[i], canvas, source_size,
                             params) for i in range(len(images))]

    def _decode(self, pred: np.ndarray, protos: np.ndarray | None, placement: Placement, canvas: tuple[int, int],
                source_size: tuple[int, int], params: InferenceParams) -> Detections:
        layout = self.layout
        wanted = self._wanted_ids(params)
        if layout.head == "end2end":
            candidates = _end2end_candidates(pred, layout, params.confidence, wanted)
            candidates = candidates.take(_top(candidates, params.max_detections))
        else:
            collect = _anchor_candidates if layout.head == "anchors" else _yolov5_candidates
            candidates = collect(pred, layout, params.confidence, wanted)
            candidates = candidates.take(_nms(candidates, params.iou, params.max_detections, layout.task == "obb"))
        boxes = _rotated_bounds(candidates.boxes) if layout.task == "obb" else candidates.boxes
        detections = Detections(
            placement.to_source(boxes, source_size),
            candidates.scores,
            candidates.class_ids,
            [self.class_name(int(c)) for c in candidates.class_ids],
        )
        if layout.task == "segment" and protos is not None:
            detections = self._with_polygons(detections, candidates, protos, placement, canvas, source_size)
        elif layout.task == "pose":
            detections.keypoints = self._keypoints(candidates.extra, placement, source_size)
            detections.keypoint_names = list(self._keypoint_names())
        return detections

    def _with_polygons(self, detections: Detections, candidates: _Candidates, protos: np.ndarray,
                       placement: Placement, canvas: tuple[int, int], source_size: tuple[int, int]) -> Detections:
        """Attach mask polygons; like Ultralytics, a detection whose mask is empty is dropped."""
        polygons = [_mask_polygon(coef[:self.layout.mask_dim], protos, box, canvas)
                    for coef, box in zip(candidates.extra, candidates.boxes)]
        keep = [i for i, polygon in enumerate(polygons) if len(polygon)]
        return Detections(
            detections.xyxy[keep], detections.confidence[keep], detections.class_id[keep],
            [detections.class_name[i] for i in keep],
            polygons=[placement.to_source(polygons[i], source_size) for i in keep],
        )

    def _keypoints(self, extra: np.ndarray, placement: Placement, source_size: tuple[int, int]) -> np.ndarray:
        count, dims = self.layout.kpt_shape
        raw = extra[:, :count * dims].reshape(-1, count, dims)
        points = np.ones((len(raw), count, 3), dtype=np.float32)
        points[..., :2] = placement.to_source(raw[..., :2], source_size)
        if dims == 3:
            points[..., 2] = raw[..., 2]
        return points

    def _keypoint_names(self) -> tuple[str, ...]:
        count = self.layout.kpt_shape[0]
        if self.meta.kpt_names is not None and len(self.meta.kpt_names) == count:
            return self.meta.kpt_names
        return COCO_KEYPOINTS if count == len(COCO_KEYPOINTS) else tuple(str(k) for k in range(count))


class YoloClassifier(_OnnxModel):
    """classify exports: resize the short side, centre-crop, softmax only if the export did not."""

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        """Square inputs: shortest side to the input size (Ultralytics ``classify_transforms``); else stretched."""
        height, width = self.network_hw
        if height != width:
            return width, height
        scale = width / min(source_size)
        return max(width, round(source_size[0] * scale)), max(height, round(source_size[1] * scale))

    def predict(self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams,
                ) -> list[Classification]:
        if not images:
            return []
        height, width = self.network_hw
        blob = np.empty((len(images), 3, height, width), dtype=np.float32)
        for i, image in enumerate(images):
            np.multiply(_centre_crop(image, width, height).transpose(2, 0, 1), np.float32(1 / 255.0), out=blob[i])
        probs = _as_probabilities(self._runner.run(blob)[0])
        names = list(self.names) or [str(i) for i in range(probs.shape[1])]
        return [Classification(names, row) for row in probs]


def _centre_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w < width or h < height:
        scale = max(width / w, height / h)
        image = cv2.resize(image, (max(width, round(w * scale)), max(height, round(h * scale))))
        h, w = image.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    return image[top:top + height, left:left + width]


def _as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Exports normally end in softmax; apply one where the rows are clearly not probabilities."""
    scores = scores.reshape(len(scores), -1).astype(np.float32)
    if scores.size and (scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# -- loading -----------------------------------------------------------------------------------------
def load_onnx_model(path: str | os.PathLike[str], *, threads: int = 0, providers: tuple[str, ...] = ()) -> Model:
    """Open an ONNX YOLO export and configure it from its metadata and output shapes."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}", code="unknown_model")
    session = open_session(path, threads, providers)
    described = describe(session)
    spec = _input_spec(session, described)
    meta = ExportMetadata.parse(dict(session.get_modelmeta().custom_metadata_map))
    layout = resolve_layout(_output_shapes(session, spec, meta), meta, _network_hw(spec, meta), described)
    info = _model_info(path, spec, meta, layout)
    log.info("loaded %s: %s on %s", path.name, info.description, session.get_providers()[0])
    cls = YoloClassifier if layout.task == "classify" else YoloDetector
    return cls(_Runner(session, spec), layout, meta, info)


def _model_info(path: Path, spec: InputSpec, meta: ExportMetadata, layout: Layout) -> ModelInfo:
    height, width = _network_hw(spec, meta)
    names = meta.names or tuple(str(i) for i in range(layout.nc))
    shape = f"{width}x{height}" + (" (dynamic, rectangular letterbox)" if spec.dynamic_hw else "")
    batch = "dynamic batch" if spec.batch is None else f"batch {spec.batch}"
    return ModelInfo(
        name=path.stem,
        task=API_TASKS[layout.task],
        classes=names,
        input_size=(width, height),
        source=str(path),
        license="user-supplied",
        description=f"YOLO {layout.task} ONNX export, {layout.head} head, {len(names)} classes, {shape}, {batch}",
    )

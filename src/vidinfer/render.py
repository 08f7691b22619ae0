"""Drawing a results JSON onto its video: an H.264 MP4 a browser plays, with the source's audio.

Works from the results file alone, so any finished job (or ``vidinfer infer`` run)
can be rendered. Every input frame becomes one output frame with the same
timestamp (relative to the first rendered frame), so the output keeps the source's
frame rate, frame count and sync with its audio.

What each frame shows comes from the two samples around it (``frame_offset``):

* a tracked object (``tracker_id``) seen in both is drawn where linear
  interpolation between them puts it: boxes, polygons and keypoints move smoothly;
* anything else is carried forward from the last sample until the next one (and,
  after the last sample, for one sampling interval), so nothing flickers.

Drawing uses supervision's annotators (boxes, labels, masks, polygons, keypoints
and skeletons, traces, blur, line zones); the frames are BGR, as supervision expects.
Decoding and encoding stream frame by frame with PyAV: memory stays flat whatever
the video's length.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import statistics
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from vidinfer.core.sampling import check_range, check_range_in_video
from vidinfer.core.video import DEFAULT_DECODE_THREADS, VideoInfo, iter_frames, probe
from vidinfer.errors import InvalidInput

#: results keys that are not a model's column
NON_MODEL_KEYS = frozenset({"frame_offset", "time_offset", "video", "tracks", "counts", "lines", "zones"})
#: audio codecs (FFmpeg's names of codec ids, not of decoders: MP3's decoder is ``mp3float``) copied
#: into the MP4 as they are (browsers play them); others are re-encoded to AAC
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "opus"})
#: frames by which a video may differ from the one the results describe and still pass for it
#: (a damaged tail or another FFmpeg may count a frame or two differently)
FRAME_TOLERANCE = 2
#: keypoints below this confidence are not drawn
KEYPOINT_MIN_CONFIDENCE = 0.3
#: seconds of trail drawn behind a tracked object
TRAIL_SECONDS = 2.0
#: encoder settings: visually clean, fast on a CPU
X264_OPTIONS = {"crf": "20", "preset": "veryfast"}

ProgressFn = Callable[[int, int], None]


# -- the predictions of one sample, as arrays ---------------------------------------------------
@dataclass
class Shapes:
    """One model's predictions on one sampled frame, as parallel arrays (one row per object)."""

    xyxy: np.ndarray  # (n, 4) float32, source pixels
    confidence: np.ndarray  # (n,) float32
    class_name: list[str]
    tracker_id: np.ndarray  # (n,) int64, -1 where untracked
    polygons: list[np.ndarray | None]  # (m, 2) outline (segmentation, OCR quadrilateral)
    keypoints: list[np.ndarray | None]  # (k, 3): x, y, confidence
    text: list[str | None]  # OCR
    gaze: list[tuple[float, float] | None]  # yaw, pitch (radians)
    landmarks: list[np.ndarray | None]  # (6, 2) gaze face landmarks
    #: a classifier's answer for the whole frame (no boxes)
    caption: str | None = None

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls, caption: str | None = None) -> Shapes:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [], np.zeros(0, np.int64),
                   [], [], [], [], [], caption)


def _points(raw: Any) -> np.ndarray | None:
    if not isinstance(raw, list) or not raw:
        return None
    return np.array([[p.get("x", 0.0), p.get("y", 0.0)] for p in raw if isinstance(p, dict)], np.float32)


def _keypoints(raw: Any) -> np.ndarray | None:
    if not isinstance(raw, list) or not raw:
        return None
    return np.array([[p.get("x", 0.0), p.get("y", 0.0), p.get("confidence", 1.0)] for p in raw
                     if isinstance(p, dict)], np.float32)


def _caption(entry: dict[str, Any]) -> str | None:
    """A classifier's line: the top class (single-label) or the predicted classes (multi-label)."""
    if isinstance(entry.get("predicted_classes"), list):
        return ", ".join(map(str, entry["predicted_classes"])) or None
    if entry.get("top") is not None:
        conf = entry.get("confidence")
        return f"{entry['top']} {conf:.2f}" if isinstance(conf, (int, float)) else str(entry["top"])
    return None


def parse_entry(entry: Any) -> Shapes:
    """One results entry (any model's shape) as ``Shapes``; ``null`` and unknown shapes are empty."""
    if not isinstance(entry, dict):
        return Shapes.empty()
    preds = entry.get("predictions")
    if not isinstance(preds, list):  # multi-label classification, clip embeddings, ...
        return Shapes.empty(_caption(entry))
    rows = []
    for p in preds:
        if not isinstance(p, dict):
            continue
        if isinstance(p.get("face"), dict):  # gaze: the face box, its landmarks, where it looks
            face = p["face"]
            rows.append((face, "face", None, None, None, (float(p.get("yaw", 0.0)), float(p.get("pitch", 0.0))),
                         _points(face.get("landmarks"))))
        elif "x" in p and "width" in p:
            rows.append((p, str(p.get("class", p.get("class_id", ""))), _points(p.get("points")),
                         _keypoints(p.get("keypoints")), p.get("text"), None, None))
    if not rows:
        return Shapes.empty(_caption(entry))
    box = [r[0] for r in rows]
    xyxy = np.array([[b["x"] - b["width"] / 2, b["y"] - b["height"] / 2,
                      b["x"] + b["width"] / 2, b["y"] + b["height"] / 2] for b in box], np.float32)
    tracker = [b.get("tracker_id") for b in box]
    return Shapes(
        xyxy=xyxy,
        confidence=np.array([float(b.get("confidence", 1.0)) for b in box], np.float32),
        class_name=[r[1] for r in rows],
        tracker_id=np.array([int(t) if isinstance(t, (int, float)) else -1 for t in tracker], np.int64),
        polygons=[r[2] for r in rows], keypoints=[r[3] for r in rows], text=[r[4] for r in rows],
        gaze=[r[5] for r in rows], landmarks=[r[6] for r in rows], caption=_caption(entry),
    )


def _box_map(points: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Move points drawn relative to box ``src`` onto box ``dst`` (scale and shift)."""
    sw, sh = max(src[2] - src[0], 1e-3), max(src[3] - src[1], 1e-3)
    scale = np.array([(dst[2] - dst[0]) / sw, (dst[3] - dst[1]) / sh], np.float32)
    out = points.copy()
    out[:, :2] = (points[:, :2] - src[:2]) * scale + dst[:2]
    return out


def _lerp_points(a: np.ndarray | None, b: np.ndarray | None, alpha: float, box_a: np.ndarray,
                 box: np.ndarray) -> np.ndarray | None:
    if a is None:
        return None
    if b is not None and a.shape == b.shape:
        out = a * (1 - alpha) + b * alpha
        if a.shape[1] == 3:  # a keypoint is as visible as its least visible end
            out[:, 2] = np.minimum(a[:, 2], b[:, 2])
        return out
    return _box_map(a, box_a, box)


def interpolate(a: Shapes, b: Shapes | None, alpha: float) -> Shapes:
    """``a``'s objects at ``alpha`` (0..1) of the way to sample ``b``: tracked objects present in both
    move linearly; everything else stays where ``a`` had it (carried forward)."""
    if b is None or alpha <= 0 or not len(a) or not len(b) or not (a.tracker_id >= 0).any():
        return a
    where = {int(t): j for j, t in enumerate(b.tracker_id) if t >= 0}
    xyxy = a.xyxy.copy()
    polygons, keypoints, landmarks = list(a.polygons), list(a.keypoints), list(a.landmarks)
    for i, t in enumerate(a.tracker_id):
        j = where.get(int(t)) if t >= 0 else None
        if j is None:
            continue
        xyxy[i] = a.xyxy[i] * (1 - alpha) + b.xyxy[j] * alpha
        polygons[i] = _lerp_points(a.polygons[i], b.polygons[j], alpha, a.xyxy[i], xyxy[i])
        keypoints[i] = _lerp_points(a.keypoints[i], b.keypoints[j], alpha, a.xyxy[i], xyxy[i])
        landmarks[i] = _lerp_points(a.landmarks[i], b.landmarks[j], alpha, a.xyxy[i], xyxy[i])
    return Shapes(xyxy, a.confidence, a.class_name, a.tracker_id, polygons, keypoints, a.text, a.gaze,
                  landmarks, a.caption)


def drawable_keys(results: dict[str, Any]) -> list[str]:
    """The model columns of a results file that hold something to draw (not CLIP embeddings)."""
    n = len(results.get("frame_offset") or [])
    keys = []
    for key, column in results.items():
        if key in NON_MODEL_KEYS or not isinstance(column, list) or len(column) != n:
            continue
        if any(isinstance(e, dict) and ("predictions" in e or "top" in e) for e in column):
            keys.append(key)
    return keys


class Timeline:
    """Which predictions to show on a frame: the samples around it, interpolated or carried."""

    def __init__(self, results: dict[str, Any], keys: Sequence[str]) -> None:
        offsets = results.get("frame_offset")
        if not isinstance(offsets, list):
            raise InvalidInput("not a vidinfer results file: it has no frame_offset list", code="invalid_results")
        self.offsets: list[int] = [int(o) for o in offsets]
        if self.offsets != sorted(self.offsets):
            raise InvalidInput("frame_offset must increase", code="invalid_results")
        times = results.get("time_offset")
        self.times: list[float] | None = ([float(t) for t in times]
                                          if isinstance(times, list) and len(times) == len(offsets) else None)
        self.columns = [results[k] for k in keys]
        gaps = np.diff(self.offsets)
        #: frames the last sample is shown for: one typical sampling interval (a lone sample: to the end)
        self.tail = int(np.median(gaps)) if len(gaps) else 1 << 62
        self._cache: dict[int, list[Shapes]] = {}

    def _sample(self, k: int) -> list[Shapes]:
        shapes = self._cache.get(k)
        if shapes is None:
            if len(self._cache) > 4:  # frames arrive in order: older samples are never asked for again
                self._cache.pop(min(self._cache))
            shapes = self._cache[k] = [parse_entry(column[k]) for column in self.columns]
        return shapes

    def at(self, index: int, time: float) -> list[Shapes]:
        """One ``Shapes`` per model for the frame with display ``index`` at ``time`` seconds."""
        k = bisect.bisect_right(self.offsets, index) - 1
        if k < 0:
            return []
        if k + 1 == len(self.offsets):
            return self._sample(k) if index - self.offsets[k] < self.tail else []
        a, b = self._sample(k), self._sample(k + 1)
        if self.times is not None and self.times[k + 1] > self.times[k]:
            alpha = (time - self.times[k]) / (self.times[k + 1] - self.times[k])
        else:
            alpha = (index - self.offsets[k]) / (self.offsets[k + 1] - self.offsets[k])
        alpha = min(max(alpha, 0.0), 1.0)
        return [interpolate(sa, sb, alpha) for sa, sb in zip(a, b)]


# -- lines and zones with their counts -----------------------------------------------------------
@dataclass
class Overlay:
    """A counting line or zone of the results' ``counts`` and its count over time."""

    kind: str  # "line" or "zone"
    name: str
    points: np.ndarray  # line: (2, 2); zone: (m, 2)
    #: (time, a, b) after each sample, in time order: a line's (in, out) totals, a zone's (present, 0)
    steps: list[tuple[float, int, int]] = field(default_factory=list)

    def value(self, time: float) -> tuple[int, int]:
        i = bisect.bisect_right(self.steps, (time + 1e-6, math.inf, math.inf)) - 1
        return (0, 0) if i < 0 else (self.steps[i][1], self.steps[i][2])


def overlays(results: dict[str, Any], keys: Sequence[str]) -> list[Overlay]:
    """The lines and zones of the results' ``counts`` for the model ``keys`` drawn (README: Tracking
    and counting): per sample, a line's cumulative in/out totals and the objects present in a zone."""
    counts = results.get("counts")
    times = results.get("time_offset") or []
    if not isinstance(counts, dict):
        return []
    out = []
    for key in keys:
        per_model = counts.get(key)
        if not isinstance(per_model, dict):
            continue
        for kind in ("line", "zone"):
            items = per_model.get(kind + "s")
            for i, item in enumerate(items if isinstance(items, list) else []):
                pts = _overlay_points(item.get("points")) if isinstance(item, dict) else None
                if pts is None or (kind == "zone" and len(pts) < 3):
                    continue
                if kind == "line":
                    series = zip(item.get("cumulative_in") or [], item.get("cumulative_out") or [])
                else:
                    series = ((n, 0) for n in item.get("present") or [])
                steps = [(float(t), int(a or 0), int(b or 0)) for t, (a, b) in zip(times, series)]
                name = str(item.get("name") or f"{kind} {i + 1}")
                out.append(Overlay(kind, f"{key} {name}" if len(keys) > 1 else name, pts[:2] if kind == "line"
                                   else pts, steps))
    return out


def _overlay_points(raw: Any) -> np.ndarray | None:
    try:
        pts = np.asarray(raw, dtype=np.float32).reshape(-1, 2)
    except (TypeError, ValueError):
        return None
    return pts if len(pts) >= 2 and np.isfinite(pts).all() else None


# -- drawing -----------------------------------------------------------------------------------
def _color_index(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFF


class Painter:
    """Draws ``Shapes`` onto BGR frames of one size with supervision's annotators."""

    def __init__(self, width: int, height: int, fps: float, blur: Iterable[str] = ()) -> None:
        import supervision as sv

        self.sv = sv
        short = min(width, height)
        self.thickness = max(2, round(short / 240))
        self.text_scale = max(0.5, short / 900)
        self.blur_classes = {c.lower() for c in blur}
        self.box = sv.BoxAnnotator(thickness=self.thickness)
        self.label = sv.LabelAnnotator(text_scale=self.text_scale, text_thickness=max(1, self.thickness // 2),
                                       text_padding=max(2, round(short / 120)))
        (_, text_h), baseline = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, self.text_scale,
                                                max(1, self.thickness // 2))
        self.label_height = text_h + baseline + 2 * max(2, round(short / 120))
        self.mask = sv.MaskAnnotator(opacity=0.35)
        self.polygon = sv.PolygonAnnotator(thickness=max(1, self.thickness - 1))
        #: one trail history per model layer: tracker ids count from 1 in each model key
        self.traces: dict[int, Any] = {}
        self.trace_length = max(2, round(fps * TRAIL_SECONDS))
        self.vertex = sv.VertexAnnotator(color=sv.Color.from_hex("#00ff88"), radius=max(2, self.thickness + 1))
        self.edge = sv.EdgeAnnotator(color=sv.Color.from_hex("#00ff88"), thickness=self.thickness)
        self.landmark = sv.VertexAnnotator(color=sv.Color.from_hex("#ffd000"), radius=max(1, self.thickness))
        self.line_zone = sv.LineZoneAnnotator(thickness=self.thickness, text_scale=self.text_scale,
                                              text_thickness=max(1, self.thickness // 2))

    def paint(self, bgr: np.ndarray, layers: Sequence[Shapes], overlays: Sequence[Overlay] = (),
              time: float = 0.0) -> np.ndarray:
        """Draw every layer onto ``bgr`` (in place) and return it."""
        sv = self.sv
        height, width = bgr.shape[:2]
        drawn = [s for s in layers if len(s)]
        if self.blur_classes:
            for s in drawn:
                pick = np.array([c.lower() in self.blur_classes for c in s.class_name])
                for box in s.xyxy[pick]:
                    # a box filter half the box's shorter side wide: nothing recognisable survives
                    kernel = max(3, int(min(box[2] - box[0], box[3] - box[1]) / 2))
                    bgr = sv.BlurAnnotator(kernel_size=kernel).annotate(bgr, sv.Detections(xyxy=box[None]))
        for layer, s in enumerate(layers):
            if not len(s):
                continue
            det, colors = self._detections(s)
            with_poly = [i for i, p in enumerate(s.polygons) if p is not None and len(p) >= 3]
            if with_poly:
                sub = det[np.array(with_poly)]
                sub.mask = np.stack([sv.polygon_to_mask(s.polygons[i], (width, height)).astype(bool)
                                     for i in with_poly])
                bgr = self.mask.annotate(bgr, sub, custom_color_lookup=colors[with_poly])
                bgr = self.polygon.annotate(bgr, sub, custom_color_lookup=colors[with_poly])
            bgr = self.box.annotate(bgr, det, custom_color_lookup=colors)
            tracked = np.flatnonzero(s.tracker_id >= 0)
            if len(tracked):
                trace = self.traces.get(layer)
                if trace is None:
                    trace = self.traces[layer] = sv.TraceAnnotator(
                        trace_length=self.trace_length, thickness=self.thickness, position=sv.Position.CENTER)
                bgr = trace.annotate(bgr, det[tracked], custom_color_lookup=colors[tracked])
            self._keypoints(bgr, s)
            self._gaze(bgr, s)
            # a label sits above its box; for a box at the top edge, inside it (supervision's smart_position
            # does this too, but costs ~0.1 s a frame with a few labels)
            at = det.xyxy.copy()
            at[:, 1] = np.maximum(at[:, 1], self.label_height)
            bgr = self.label.annotate(bgr, self.sv.Detections(xyxy=at, confidence=det.confidence,
                                                              class_id=det.class_id),
                                      labels=self._labels(s), custom_color_lookup=colors)
        for overlay in overlays:
            bgr = self._overlay(bgr, overlay, time)
        y = 0
        for caption in (s.caption for s in layers if s.caption):
            scale, thick = self.text_scale * 1.4, max(1, self.thickness // 2)
            (tw, th), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            pad = max(4, th // 2)
            y += th + 2 * pad
            bgr = sv.draw_text(bgr, caption, sv.Point(pad + tw / 2 + 4, y - th / 2 - pad + 4),
                               text_color=sv.Color.WHITE, text_scale=scale, text_thickness=thick, text_padding=pad,
                               background_color=sv.Color.BLACK)
        return bgr

    def _detections(self, s: Shapes):  # noqa: ANN202 - supervision is imported lazily
        colors = np.array([int(t) if t >= 0 else _color_index(c) for t, c in zip(s.tracker_id, s.class_name)],
                          np.int64)
        det = self.sv.Detections(xyxy=s.xyxy.astype(np.float32), confidence=s.confidence,
                                 class_id=colors.copy(),
                                 tracker_id=s.tracker_id if (s.tracker_id >= 0).any() else None)
        return det, colors

    @staticmethod
    def _labels(s: Shapes) -> list[str]:
        labels = []
        for i in range(len(s)):
            name = f'"{s.text[i]}"' if s.text[i] else s.class_name[i]
            track = f"#{s.tracker_id[i]} " if s.tracker_id[i] >= 0 else ""
            labels.append(f"{track}{name} {s.confidence[i]:.2f}")
        return labels

    def _keypoints(self, bgr: np.ndarray, s: Shapes) -> None:
        from supervision.key_points.skeletons import SKELETONS_BY_VERTEX_COUNT

        groups: dict[int, list[np.ndarray]] = {}
        for k in s.keypoints:
            if k is not None and len(k):
                groups.setdefault(len(k), []).append(k)
        for count, items in groups.items():
            xy = np.stack(items)[:, :, :2].copy()
            xy[np.stack(items)[:, :, 2] < KEYPOINT_MIN_CONFIDENCE] = 0  # (0, 0): not drawn
            points = self.sv.KeyPoints(xy=xy.astype(np.float32))
            if count in SKELETONS_BY_VERTEX_COUNT:
                self.edge.annotate(bgr, points)
            self.vertex.annotate(bgr, points)

    def _gaze(self, bgr: np.ndarray, s: Shapes) -> None:
        marks = [m for m in s.landmarks if m is not None and len(m)]
        if marks and len({len(m) for m in marks}) == 1:
            self.landmark.annotate(bgr, self.sv.KeyPoints(xy=np.stack(marks).astype(np.float32)))
        for box, gaze in zip(s.xyxy, s.gaze):
            if gaze is None:
                continue
            yaw, pitch = gaze
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            length = max(1.5 * (box[2] - box[0]), 15.0)
            dx = -length * math.sin(yaw) * math.cos(pitch)
            dy = -length * math.sin(pitch)
            cv2.arrowedLine(bgr, (int(cx), int(cy)), (int(cx + dx), int(cy + dy)), (0, 208, 255),
                            self.thickness, cv2.LINE_AA, tipLength=0.2)

    def _overlay(self, bgr: np.ndarray, overlay: Overlay, time: float) -> np.ndarray:
        sv = self.sv
        n_in, n_out = overlay.value(time)
        if overlay.kind == "line":
            (x1, y1), (x2, y2) = overlay.points[:2]
            line = sv.LineZone(start=sv.Point(float(x1), float(y1)), end=sv.Point(float(x2), float(y2)))
            # the counts the results recorded up to this time, not recounted from the drawn boxes
            # (LineZone keeps them per class; its in_count/out_count sum these)
            line._in_count_per_class, line._out_count_per_class = {None: n_in}, {None: n_out}
            return self.line_zone.annotate(bgr, line)
        zone = sv.PolygonZone(polygon=overlay.points.round().astype(np.int64))
        return sv.PolygonZoneAnnotator(zone=zone, color=sv.Color.WHITE, thickness=self.thickness,
                                       text_scale=self.text_scale, text_thickness=max(1, self.thickness // 2),
                                       opacity=0.15).annotate(bgr, label=f"{overlay.name}: {n_in}")


def annotate(rgb: np.ndarray, entry: dict[str, Any] | None) -> np.ndarray:
    """Draw one results entry onto an RGB frame (returns a copy): for pictures such as the demo's sheet."""
    h, w = rgb.shape[:2]
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    Painter(w, h, 30.0).paint(bgr, [parse_entry(entry)])
    return np.ascontiguousarray(bgr[:, :, ::-1])


# -- the video -----------------------------------------------------------------------------------
@dataclass
class RenderStats:
    frames: int
    first_time: float
    audio: str | None  # "copy", "aac" (re-encoded) or None
    output: Path
    #: what the caller should tell the user: results not checked against the video, or forced
    warnings: list[str] = field(default_factory=list)


def _frames_in_range(info: VideoInfo, start: Fraction, end: Fraction | None) -> int:
    if info.display_pts:
        base = info.display_pts[0]
        times = ((p - base) * info.time_base for p in info.display_pts)
        return sum(1 for t in times if t >= start and (end is None or t < end))
    span_end = info.duration if end is None else min(float(end), info.duration)
    return max(0, min(info.frame_count, math.ceil((span_end - float(start)) * float(info.fps))))


# -- which video, which range -----------------------------------------------------------------
def _described(meta: dict[str, Any]) -> str:
    return (f"{meta.get('width')}x{meta.get('height')}, {meta.get('frame_count')} frames, "
            f"{float(meta.get('duration') or 0):.3f} s")


def check_video(results: dict[str, Any], info: VideoInfo, force: bool = False) -> str | None:
    """Refuse to draw results on a video other than theirs (their ``video`` key: size, frames,
    duration), unless ``force``. Returns a warning where nothing could be checked (results written
    before the key existed) or where ``force`` let a mismatch through."""
    meta = results.get("video")
    if not isinstance(meta, dict):
        return "the results do not say which video they were made from (an older file): not checked against it"
    try:
        size = (int(meta["width"]), int(meta["height"]))
        frames, duration = int(meta["frame_count"]), float(meta["duration"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("the results' \"video\" key needs width, height, frame_count and duration numbers",
                           code="invalid_results") from None
    slack = max(FRAME_TOLERANCE / float(info.fps or 1), 0.05)
    if (size == (info.width, info.height) and abs(frames - info.frame_count) <= FRAME_TOLERANCE
            and abs(duration - info.duration) <= slack):
        return None
    mine = {"width": info.width, "height": info.height, "frame_count": info.frame_count, "duration": info.duration}
    message = (f"the results were made from another video ({_described(meta)}) than this one "
               f"({_described(mine)})")
    if force:
        return f"{message}: drawn anyway (--force)"
    raise InvalidInput(f"{message}; pass --force to draw them anyway", code="video_mismatch")


def results_span(results: dict[str, Any], duration: float) -> tuple[float | None, float | None]:
    """The seconds the results cover: from their first sample to one sampling interval past their last
    (as long as the last sample is drawn), ``None`` at either end for the video's own start or end."""
    times = results.get("time_offset")
    if not isinstance(times, list) or not times or not all(isinstance(t, (int, float)) for t in times):
        return None, None
    # time_offset is rounded to 4 decimals: a little earlier keeps the first sampled frame in
    start = float(times[0]) - 1e-4 if times[0] > 1e-4 else None
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    if not gaps:
        return start, None
    end = float(times[-1]) + statistics.median(gaps)
    return start, None if end >= duration else end


def render_range(results: dict[str, Any], info: VideoInfo, start: float | None,
                 end: float | None) -> tuple[Fraction, Fraction | None]:
    """What to render: the range asked for; where a bound is not given, the results' own
    (``results_span``), unless that would leave nothing between the bounds."""
    own_start, own_end = results_span(results, info.duration)
    if start is None and (end is None or own_start is None or own_start < end):
        start = own_start
    if end is None and (own_end is None or own_end > (start or 0)):
        end = own_end
    s, e = check_range(start, end)
    check_range_in_video(s, info.duration)
    return s, e


class _Audio:
    """The source's first audio stream, fed into the output as the video advances (kept interleaved)."""

    def __init__(self, path: str, out: av.container.OutputContainer, origin: Fraction,
                 end: Fraction | None) -> None:
        self.container = av.open(path)
        self.src = self.container.streams.audio[0]
        self.copy = _copyable(self.src)
        self.tb = self.src.time_base or Fraction(1, self.src.codec_context.sample_rate or 48000)
        self.origin, self.end = origin, end  # absolute seconds in the source's clock
        if self.copy:
            self.stream = out.add_stream_from_template(self.src)
        else:
            rate = self.src.codec_context.sample_rate or 48000
            self.stream = out.add_stream("aac", rate=rate)
            self.stream.layout = self.src.codec_context.layout.name if self.src.codec_context.layout else "stereo"
        self.out = out
        self.shift = int(origin / self.tb)
        self.next_pts = 0  # re-encoding: samples written so far
        if origin > 0:
            try:
                self.container.seek(int(origin / self.tb), stream=self.src, backward=True)
            except av.error.FFmpegError:
                pass  # decode from the start and drop what precedes ``origin``
        self.packets: Iterator[av.Packet] = iter(self.container.demux(self.src))
        self.pending: av.Packet | None = None
        self.done = False

    def _next(self) -> av.Packet | None:
        while not self.done:
            try:
                packet = self.pending or next(self.packets)
            except (StopIteration, av.error.FFmpegError):
                self.done = True
                return None
            self.pending = packet
            if packet.size == 0 or packet.pts is None:
                self.pending = None
                continue
            return packet
        return None

    def feed(self, until: Fraction | None) -> None:
        """Mux the audio up to ``until`` seconds of the source's clock (None: to the end)."""
        while (packet := self._next()) is not None:
            at = packet.pts * self.tb
            if until is not None and at >= until:
                return
            self.pending = None
            if self.end is not None and at >= self.end:
                self.done = True
                return
            if at < self.origin and self.origin > 0:
                continue
            if self.copy:
                packet.pts -= self.shift
                if packet.dts is not None:
                    packet.dts -= self.shift
                packet.stream = self.stream
                self.out.mux(packet)
            else:
                self._encode(packet)

    def _encode(self, packet: av.Packet) -> None:
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return
        for frame in frames:
            frame.pts = None  # the encoder counts samples: the output's audio starts with its video
            for out_packet in self.stream.encode(frame):
                self.out.mux(out_packet)

    def close(self) -> None:
        self.feed(None)
        if not self.copy:
            for packet in self.stream.encode(None):
                self.out.mux(packet)
        self.container.close()


def render_video(video: str, results: dict[str, Any], output: Path | str, *,
                 models: Sequence[str] | None = None, blur: Sequence[str] = (),
                 start: float | None = None, end: float | None = None, force: bool = False,
                 on_progress: ProgressFn | None = None, threads: int = DEFAULT_DECODE_THREADS) -> RenderStats:
    """Write ``video`` with the predictions of ``results`` drawn on every frame to ``output`` (H.264 MP4).

    ``models``: the result keys to draw (default: every drawable one); ``blur``: classes whose boxes
    are blurred (``face`` for gaze results); ``start``/``end``: the range in seconds (the output
    starts at 0; default: the range the results cover). ``force``: draw results made from another
    video. ``on_progress(done, total)`` is called after each frame and may raise to stop.
    """
    output = Path(output)
    check_range(start, end)
    keys = list(models) if models else drawable_keys(results)
    missing = [k for k in keys if k not in results or k in NON_MODEL_KEYS]
    if missing:
        raise InvalidInput(f"no model {', '.join(map(repr, missing))} in the results; it has: "
                           f"{', '.join(drawable_keys(results)) or 'none'}", code="unknown_results_key")
    timeline = Timeline(results, keys)
    lines = overlays(results, keys)
    info = probe(video)
    warning = check_video(results, info, force)
    s, e = render_range(results, info, start, end)
    total = _frames_in_range(info, s, e)
    width, height = info.width - info.width % 2, info.height - info.height % 2
    painter = Painter(width, height, float(info.fps), blur)
    tb = info.time_base if info.display_pts else 1 / info.fps
    base_abs = (info.display_pts[0] * info.time_base) if info.display_pts else Fraction(0)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".part")
    done = 0
    pts = -1
    first: Fraction | None = None
    audio: _Audio | None = None
    try:
        with av.open(str(partial), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=info.fps, options=dict(X264_OPTIONS))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = tb
            stream.codec_context.time_base = tb
            for decoded in iter_frames(info, start=float(s), threads=threads):
                if decoded.time < s:
                    continue
                if e is not None and decoded.time >= e:
                    break
                if first is None:
                    first = decoded.time
                    if info.has_audio:
                        audio = _Audio(info.path, out, base_abs + first, None if e is None else base_abs + e)
                frame = _draw(decoded.displayed(), painter, timeline.at(decoded.index, float(decoded.time)), lines,
                              float(decoded.time), width, height)
                frame.pts = pts = _output_pts(decoded.time - first, tb, pts)
                frame.time_base = tb
                if audio is not None:
                    audio.feed(base_abs + decoded.time)
                for packet in stream.encode(frame):
                    out.mux(packet)
                done += 1
                if on_progress is not None:
                    on_progress(done, max(total, done))
            for packet in stream.encode(None):
                out.mux(packet)
            if audio is not None:
                audio.close()
                audio = None
        if done == 0:
            raise InvalidInput("no frame of the video lies in the range to render", code="invalid_range")
        os.replace(partial, output)
    finally:
        if audio is not None:
            audio.container.close()
        partial.unlink(missing_ok=True)
    return RenderStats(done, float(first or 0), None if not info.has_audio else ("copy" if _copied(info) else "aac"),
                       output, [warning] if warning else [])


def _copyable(stream: av.audio.AudioStream) -> bool:
    """Copied into the MP4 as it is: decided by the codec, not by the decoder PyAV picked."""
    return stream.codec_context.codec.canonical_name in MP4_AUDIO_COPY


def _output_pts(time: Fraction, tb: Fraction, last: int) -> int:
    """A frame's output timestamp: its time, but always after the last one's (MP4 refuses two frames
    at one time, which a badly muxed input can give: timestamps jumping ahead and back)."""
    return max(round(time / tb), last + 1)


def _copied(info: VideoInfo) -> bool:
    with av.open(info.path) as container:
        return bool(container.streams.audio) and _copyable(container.streams.audio[0])


def _draw(frame: av.VideoFrame, painter: Painter, layers: list[Shapes], lines: list[Overlay], time: float,
          width: int, height: int) -> av.VideoFrame:
    """The frame to encode: the decoded one itself when nothing is drawn on it (no conversion)."""
    if not any(len(s) or s.caption for s in layers) and not lines and (frame.width, frame.height) == (width, height):
        frame.pict_type = av.video.frame.PictureType.NONE
        return frame
    bgr = frame.to_ndarray(format="bgr24")[:height, :width]
    bgr = painter.paint(np.ascontiguousarray(bgr), layers, lines, time)
    return av.VideoFrame.from_ndarray(bgr, format="bgr24")

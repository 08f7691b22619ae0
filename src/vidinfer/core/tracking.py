"""Tracking: ByteTrack over a results file's samples, in order, as one post-processing step.

It works on the results JSON (a dict, the wire shape) rather than on core prediction types, so the
local CLI, the embedded worker and the distributed engine's merge share one function: a chunked job
is tracked once, over its merged samples, which links ids across chunk boundaries exactly as a single
pass does (the same input gives the same ids).

What it adds (see the README's "Tracking and counting"):

- ``tracker_id`` on every prediction of every detection-shaped model (boxes with a ``detection_id``:
  object-detection, instance-segmentation, keypoint-detection, ocr), and on the ``face`` of every
  gaze-detection prediction (as the hosted API puts it): an integer from 1, numbered in order of first
  appearance, or ``null`` for a detection no track claimed (a one-off);
- ``results["tracks"][model_key]``: one summary per track.

The tracker is Roboflow's ``trackers`` package (``ByteTrackTracker``, the successor of
supervision's ``sv.ByteTrack``, which supervision 0.27+ no longer ships), fed each sample's
``time_offset`` as its timestamp with ``frame_rate = infer_fps``: the Kalman filter steps by the real
time between samples and a lost track is kept for ``lost_seconds`` of video, whatever the sampling rate.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vidinfer.errors import InvalidInput

#: top-level keys of the results file that are not models
TRACKS_KEY = "tracks"
COUNTS_KEY = "counts"
ANALYSIS_KEYS = (TRACKS_KEY, COUNTS_KEY)
#: the trackers a request may name
TRACKERS = ("bytetrack",)

#: a lost track is kept this long (seconds of video) for a detection to take it up again, and at least
#: two samples' worth (two missed samples in a row never end a track)
LOST_SECONDS = 1.0
MIN_LOST_SAMPLES = 2
#: detections at or above this confidence are matched first and may start tracks; lower ones (when a
#: model's ``confidence`` lets them through) only continue tracks (ByteTrack's second stage)
HIGH_CONFIDENCE = 0.25
#: boxes are matched to tracks by DIoU (IoU less the squared centre distance over the enclosing box's
#: squared diagonal, -1..1), which still ranks boxes that no longer overlap: at a few samples per
#: second an object can move past its own size between samples, before the tracker knows its speed.
#: A match needs DIoU >= -0.4: the same box up to about twice its size away
MIN_SIMILARITY = -0.4
#: detections in a row before a track gets an id (the first is then given the id too)
MIN_CONSECUTIVE = 2
MAX_LINES = 32
MAX_ZONES = 32
#: a line crossing counts once the box centre is this far past the line, as a percentage of the box's
#: extent across the line (its height, for a horizontal line): a standing object whose box jitters by a
#: few pixels around the line never gets there, a walking one does within a sample or two
LINE_MARGIN_PERCENT = 25.0
#: ... and has stayed past it for this many of its samples in a row (samples where the track was missed
#: do not break the run, one back within the margin does)
LINE_SAMPLES = 2
MAX_LINE_SAMPLES = 100


# -- options -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CountLine:
    """A line to count crossings of, and how clearly a track must cross it to count (README: Tracking
    and counting): ``margin`` pixels past the line, or ``margin`` percent of the box's extent across the
    line when ``relative``, on ``samples`` of the track's samples in a row. The margin and the run keep a
    box that jitters on the line from counting a crossing at every wobble."""

    start: tuple[float, float]
    end: tuple[float, float]
    margin: float = LINE_MARGIN_PERCENT
    relative: bool = True
    samples: int = LINE_SAMPLES

    @property
    def points(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return (self.start, self.end)

    @property
    def default(self) -> bool:
        return (self.margin, self.relative, self.samples) == (LINE_MARGIN_PERCENT, True, LINE_SAMPLES)

    @property
    def margin_value(self) -> float | str:
        """The margin as a request gives it: pixels as a number, a percentage as ``"25%"``."""
        return f"{self.margin:g}%" if self.relative else self.margin

    def as_dict(self) -> dict[str, Any]:
        return {"points": [list(self.start), list(self.end)], "margin": self.margin_value, "samples": self.samples}


@dataclass(frozen=True)
class AnalysisOptions:
    """What a job asks for beyond inference: a tracker, and lines and zones to count (source pixels).

    Lines and zones imply tracking (a crossing is a track changing sides)."""

    tracker: str | None = None
    lines: tuple[CountLine, ...] = ()
    zones: tuple[tuple[tuple[float, float], ...], ...] = ()
    lost_seconds: float = LOST_SECONDS

    @property
    def tracking(self) -> bool:
        return self.tracker is not None or bool(self.lines) or bool(self.zones)

    @property
    def empty(self) -> bool:
        return not self.tracking

    @classmethod
    def parse(cls, tracker: str | None = None, lines: Sequence[Any] | None = None,
              zones: Sequence[Any] | None = None) -> AnalysisOptions:
        """Validate a request's ``tracker``, ``lines`` and ``zones``; raises ``InvalidInput``."""
        if tracker is not None:
            tracker = str(tracker).lower()
            if tracker not in TRACKERS:
                raise InvalidInput(f"unknown tracker {tracker[:40]!r}: use one of {', '.join(TRACKERS)}",
                                   code="invalid_tracker")
        parsed_lines = tuple(_line(v) for v in (lines or ()))
        parsed_zones = tuple(_points(v, "zone", at_least=3) for v in (zones or ()))
        if len(parsed_lines) > MAX_LINES or len(parsed_zones) > MAX_ZONES:
            raise InvalidInput(f"at most {MAX_LINES} lines and {MAX_ZONES} zones", code="invalid_lines")
        for line in parsed_lines:
            if line.start == line.end:
                raise InvalidInput(f"a line needs two different points, got {list(line.start)} twice",
                                   code="invalid_lines")
        if (parsed_lines or parsed_zones) and tracker is None:
            tracker = TRACKERS[0]
        return cls(tracker, parsed_lines, parsed_zones)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AnalysisOptions:
        data = data or {}
        return cls.parse(data.get("tracker"), data.get("lines"), data.get("zones"))

    def as_dict(self) -> dict[str, Any]:
        """JSON for the job store (empty when nothing is asked)."""
        if self.empty:
            return {}
        return {"tracker": self.tracker,
                "lines": [[list(p) for p in line.points] if line.default else line.as_dict() for line in self.lines],
                "zones": [[list(p) for p in zone] for zone in self.zones]}


def _line(value: Any) -> CountLine:
    """A line as a request gives it: its points (any form ``_points`` reads), ``"x1,y1,x2,y2:margin=20,samples=3"``,
    or ``{"points": ..., "margin": 20 or "25%", "samples": 3}``."""
    options: dict[str, Any] = {}
    if isinstance(value, str) and ":" in value:
        value, _, text = value.partition(":")
        for item in (i.strip() for i in text.split(",") if i.strip()):
            name, eq, setting = item.partition("=")
            if not eq:
                raise InvalidInput(f"a line's options are name=value pairs (margin=20,samples=2), got {item[:40]!r}",
                                   code="invalid_lines")
            options[name.strip()] = setting.strip()
    elif isinstance(value, dict):
        options = dict(value)
        if "points" not in options:
            raise InvalidInput("a line given as an object needs its \"points\": [[x1, y1], [x2, y2]]",
                               code="invalid_lines")
        value = options.pop("points")
    unknown = sorted(str(k)[:40] for k in options if k not in ("margin", "samples"))
    if unknown:
        raise InvalidInput(f"unknown line option {unknown[0]!r}: a line takes margin and samples", code="invalid_lines")
    start, end = _points(value, "line", exactly=2)
    margin, relative = _margin(options.get("margin", f"{LINE_MARGIN_PERCENT:g}%"))
    samples = options.get("samples", LINE_SAMPLES)
    try:
        whole = not isinstance(samples, bool) and float(samples) == int(float(samples))
        samples = int(float(samples)) if whole else 0
    except (TypeError, ValueError, OverflowError):
        samples = 0
    if not 1 <= samples <= MAX_LINE_SAMPLES:
        raise InvalidInput(f"a line's samples is a whole number from 1 to {MAX_LINE_SAMPLES}, "
                           f"got {str(options.get('samples'))[:40]!r}", code="invalid_lines")
    return CountLine(start, end, margin, relative, samples)


def _margin(value: Any) -> tuple[float, bool]:
    """``20`` (pixels) or ``"25%"`` (of the box's extent across the line) -> (number, relative)."""
    text = str(value).strip()
    relative = text.endswith("%")
    try:
        number = -1.0 if isinstance(value, bool) else float(text[:-1] if relative else text)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number < 0 or (relative and number > 100):
        raise InvalidInput(f"a line's margin is pixels (margin=20) or a percentage of the box from 0% to 100% "
                           f"(margin=25%), got {text[:40]!r}", code="invalid_lines")
    return number, relative


def _points(value: Any, what: str, *, exactly: int | None = None, at_least: int | None = None) -> tuple:
    """``[[x, y], ...]``, or flat ``[x1, y1, x2, y2, ...]``, or ``"x1,y1,x2,y2"`` -> ((x, y), ...)."""
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        flat = [float(c) for p in value for c in (p if isinstance(p, (list, tuple)) else [p])]
        if any(isinstance(p, (list, tuple)) and len(p) != 2 for p in value):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInput(f"a {what} is a list of [x, y] points (or x1,y1,x2,y2,...), got {str(value)[:100]}",
                           code=f"invalid_{what}s") from None
    if len(flat) % 2 or not all(math.isfinite(c) for c in flat):
        raise InvalidInput(f"a {what} needs pairs of finite x, y numbers, got {str(value)[:100]}",
                           code=f"invalid_{what}s")
    points = tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))
    if exactly is not None and len(points) != exactly:
        raise InvalidInput(f"a {what} has {exactly} points (x1,y1,x2,y2), got {len(points)}", code=f"invalid_{what}s")
    if at_least is not None and len(points) < at_least:
        raise InvalidInput(f"a {what} needs at least {at_least} points, got {len(points)}", code=f"invalid_{what}s")
    return points


# -- the results file ----------------------------------------------------------------------
def analyse(results: dict[str, Any], options: AnalysisOptions, infer_fps: float | None = None) -> dict[str, Any]:
    """Track (and count, when lines or zones are given) in place; returns ``results``."""
    if options.empty:
        return results
    track_results(results, infer_fps, lost_seconds=options.lost_seconds)
    if options.lines or options.zones:
        from vidinfer.core.counting import count_results

        count_results(results, options.lines, options.zones, infer_fps)
    return results


def sampling_rate(results: dict[str, Any]) -> float:
    """Samples per second, from the median spacing of ``time_offset`` (1.0 for fewer than 2 samples)."""
    times = results.get("time_offset") or []
    steps = [b - a for a, b in zip(times, times[1:]) if b > a]
    return 1.0 / statistics.median(steps) if steps else 1.0


def tracked_box(pred: dict[str, Any]) -> dict[str, Any]:
    """The box a track follows in a prediction: the prediction itself, or a gaze prediction's ``face``."""
    face = pred.get("face")
    return face if isinstance(face, dict) else pred


def detection_columns(results: dict[str, Any]) -> list[str]:
    """The model keys whose entries hold boxes with a ``detection_id``, or gaze faces (what a tracker follows)."""
    keys = []
    for key, column in results.items():
        if key in ("frame_offset", "time_offset", *ANALYSIS_KEYS) or not isinstance(column, list):
            continue
        for entry in column:
            preds = entry.get("predictions") if isinstance(entry, dict) else None
            if isinstance(preds, list) and preds:
                first = preds[0] if isinstance(preds[0], dict) else {}
                if ("detection_id" in first or "face" in first) and "width" in tracked_box(first):
                    keys.append(key)
                break
    return keys


@dataclass
class _Track:
    first: int
    order: int  # position of its first detection in that sample: ties in first appearance
    samples: list[int] = field(default_factory=list)
    classes: Counter = field(default_factory=Counter)
    class_ids: dict[str, int] = field(default_factory=dict)


def track_results(results: dict[str, Any], infer_fps: float | None = None, *,
                  lost_seconds: float = LOST_SECONDS) -> dict[str, Any]:
    """Run ByteTrack over every detection-shaped model's samples, in order; returns ``results``.

    Sets ``tracker_id`` on each prediction (a gaze prediction's ``face``) and ``results["tracks"]``.
    Deterministic: the same samples give the same ids, however the job was split. A ``null`` entry (a
    frame that failed) is skipped; the tracker predicts across it by time.
    """
    import numpy as np
    import supervision as sv
    from trackers import ByteTrackTracker, DIoU

    fps = float(infer_fps) if infer_fps else sampling_rate(results)
    lost = max(lost_seconds, MIN_LOST_SAMPLES / fps)
    times: list[float] = results["time_offset"]
    frames: list[int] = results["frame_offset"]
    summaries: dict[str, list[dict[str, Any]]] = {}
    def new_tracker() -> Any:
        return ByteTrackTracker(
            lost_track_buffer=max(1, math.ceil(lost * 30)),  # counted in 30 fps frames: lost seconds * 30
            frame_rate=fps, track_activation_threshold=HIGH_CONFIDENCE, high_conf_det_threshold=HIGH_CONFIDENCE,
            minimum_consecutive_frames=MIN_CONSECUTIVE, minimum_iou_threshold=MIN_SIMILARITY, iou=DIoU(),
        )

    for key in detection_columns(results):
        column = results[key]
        #: one tracker per class: a cat never continues a person's track (scene cuts, overlaps)
        trackers: dict[int, Any] = {}
        #: (class id, the tracker's own id) -> its detections, as (sample, index in that sample's predictions)
        members: dict[tuple[int, int], list[tuple[int, int]]] = {}
        #: id(tracklet) -> (class id, tracklet, its first detection), until the tracklet is confirmed
        spawned: dict[int, tuple[int, Any, tuple[int, int]]] = {}
        for i, entry in enumerate(column):
            if entry is None:
                continue
            preds = [tracked_box(p) for p in entry.get("predictions") or []]
            for p in preds:
                p["tracker_id"] = None
            if i >= len(times):
                break
            by_class: dict[int, list[int]] = {}
            for j, p in enumerate(preds):
                by_class.setdefault(int(p.get("class_id", 0)), []).append(j)
            for cid in by_class:
                trackers.setdefault(cid, new_tracker())
            for cid, tracker in trackers.items():  # every tracker steps, so unmatched tracks age by time
                idx = by_class.get(cid, [])
                chosen = [preds[j] for j in idx]
                xyxy = np.array([[p["x"] - p["width"] / 2, p["y"] - p["height"] / 2,
                                  p["x"] + p["width"] / 2, p["y"] + p["height"] / 2] for p in chosen],
                                dtype=np.float32).reshape(-1, 4)
                detections = sv.Detections(
                    xyxy=xyxy,
                    confidence=np.array([float(p.get("confidence", 1.0)) for p in chosen], dtype=np.float32),
                    class_id=np.full(len(chosen), cid, dtype=int),
                    data={"index": np.array(idx, dtype=int)},
                )
                before = {id(t) for t in tracker.tracks}
                out = tracker.update(detections, timestamp=float(times[i]))
                order = [int(j) for j in out.data["index"]] if len(out) else []
                ids = [int(t) for t in out.tracker_id] if len(out) else []
                for j, tid in zip(order, ids):
                    if tid >= 0:
                        members.setdefault((cid, tid), []).append((i, j))
                # new tracklets were spawned, in order, from the last untracked detections of the output
                new = [t for t in tracker.tracks if id(t) not in before]
                if new and len(order) >= len(new) and all(tid < 0 for tid in ids[len(ids) - len(new):]):
                    for t, j in zip(new, order[len(order) - len(new):]):
                        spawned[id(t)] = (cid, t, (i, j))
            for ident, (cid, t, first) in list(spawned.items()):
                if t.tracker_id >= 0:  # confirmed: its first detection belongs to it too
                    members.setdefault((cid, t.tracker_id), []).insert(0, first)
                    del spawned[ident]
                elif all(t is not alive for alive in trackers[cid].tracks):
                    del spawned[ident]  # dropped before it was confirmed: a one-off
        summaries[key] = _number_tracks(column, members, frames, times)
    results[TRACKS_KEY] = summaries
    return results


def _number_tracks(column: list[Any], members: dict[Any, list[tuple[int, int]]], frames: list[int],
                   times: list[float]) -> list[dict[str, Any]]:
    """Give tracks ids 1, 2, ... in order of first appearance, set them, and summarise each."""
    tracks = []
    for refs in members.values():
        refs = sorted(set(refs))
        track = _Track(first=refs[0][0], order=refs[0][1])
        for i, j in refs:
            pred = tracked_box(column[i]["predictions"][j])
            track.samples.append(i)
            track.classes[pred["class"]] += 1
            track.class_ids.setdefault(pred["class"], int(pred.get("class_id", 0)))
        tracks.append((track, refs))
    tracks.sort(key=lambda tr: (tr[0].first, tr[0].order))
    out = []
    for number, (track, refs) in enumerate(tracks, start=1):
        for i, j in refs:
            tracked_box(column[i]["predictions"][j])["tracker_id"] = number
        cls = track.classes.most_common(1)[0][0]
        first, last = track.samples[0], track.samples[-1]
        out.append({"tracker_id": number, "class": cls, "class_id": track.class_ids[cls],
                    "first_frame": frames[first], "last_frame": frames[last],
                    "first_time": times[first], "last_time": times[last], "frames_seen": len(set(track.samples))})
    return out


#: tasks whose entries are boxes, which tracking, lines and zones work on
TRACKABLE_TASKS = frozenset({"object-detection", "instance-segmentation", "keypoint-detection", "ocr",
                             "gaze-detection"})


def check_analysis_tasks(tasks: dict[str, str], options: AnalysisOptions) -> None:
    """``check_analysis`` from each model's task (results key -> task), as the API knows them at submit."""
    if options.tracking and not any(task in TRACKABLE_TASKS for task in tasks.values()):
        found = ", ".join(f"{key} ({task})" for key, task in tasks.items())
        raise InvalidInput(f"tracking, lines and zones need a detection model (object-detection, "
                           f"instance-segmentation, keypoint-detection, ocr or gaze-detection); got {found}",
                           code="no_detection_model")

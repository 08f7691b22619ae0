"""Counting over tracked results: line crossings (in / out, per class) and zone occupancy and dwell.

Runs after ``vidinfer.core.tracking.track_results`` (it reads ``tracker_id`` and ``results["tracks"]``)
and writes ``results["counts"]``; the shape is documented in the README ("Tracking and counting").

The point of a box that counts is its centre, for lines and zones alike.

- **Lines** follow supervision's ``LineZone`` convention (a test checks that both agree): walking from
  the line's first point to its second, an object that crosses to the left-hand side is ``in``, to the
  right-hand side ``out`` (a line drawn left to right: moving up the image is ``in``). Only positions
  within the segment count (between the perpendiculars through its ends). A track is *on* a side once
  its centre has been more than the line's margin past the line (pixels, or a share of the box's extent
  across the line) on ``samples`` of its samples in a row; a crossing is the track coming to be on the
  other side, dated at the first sample of that run. A box that jitters on the line (a person standing
  on it) never gets clear of the margin long enough, so it never counts; a track missed for a few
  samples while it crosses still counts once; a track that comes back counts again.
- **Zones** use supervision's ``PolygonZone`` (centre anchor) on every sample. ``present`` counts the
  tracked objects inside at each sample; a track's *visit* is a run of its samples inside the zone, and
  its dwell is the time from the first to the last sample of each visit plus one sample period (so a
  visit seen on n consecutive samples lasts n / infer_fps seconds); samples where a visiting track was
  missed count as present.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from vidinfer.core.tracking import COUNTS_KEY, TRACKS_KEY, CountLine, sampling_rate, tracked_box

Points = Sequence[tuple[float, float]]
#: a track's samples: (sample index, centre x, centre y, width, height)
Path = list[tuple[int, float, float, float, float]]


def count_results(results: dict[str, Any], lines: Sequence[CountLine | Points], zones: Sequence[Points],
                  infer_fps: float | None = None) -> dict[str, Any]:
    """Count crossings of ``lines`` (bare points: the default margin and samples) and presence in
    ``zones`` for every tracked model; returns ``results``."""
    lines = [line if isinstance(line, CountLine) else CountLine(tuple(line[0]), tuple(line[1])) for line in lines]
    fps = float(infer_fps) if infer_fps else sampling_rate(results)
    times: list[float] = results["time_offset"]
    frames: list[int] = results["frame_offset"]
    counts: dict[str, Any] = {}
    for key, tracks in (results.get(TRACKS_KEY) or {}).items():
        classes = {t["tracker_id"]: t["class"] for t in tracks}
        paths: dict[int, Path] = defaultdict(list)  # tracker_id -> its samples, in order
        for i, entry in enumerate(results[key]):
            for p in map(tracked_box, (entry or {}).get("predictions") or []):
                if p.get("tracker_id") is not None:
                    paths[p["tracker_id"]].append((i, float(p["x"]), float(p["y"]),
                                                   float(p.get("width") or 0), float(p.get("height") or 0)))
        counts[key] = {
            "lines": [_count_line(n, line, paths, classes, frames, times) for n, line in enumerate(lines, 1)],
            "zones": [_count_zone(n, zone, paths, classes, len(frames), times, fps) for n, zone in enumerate(zones, 1)],
        }
    results[COUNTS_KEY] = counts
    return results


def _offset(line: Points, x: float, y: float) -> float | None:
    """The signed distance from the line (< 0 on its ``in`` side), None beyond its ends."""
    (sx, sy), (ex, ey) = line
    dx, dy = ex - sx, ey - sy
    along = (x - sx) * dx + (y - sy) * dy
    if along < 0 or along > dx * dx + dy * dy:
        return None
    return (dx * (y - sy) - dy * (x - sx)) / math.hypot(dx, dy)


def _side(line: Points, x: float, y: float) -> bool | None:
    """True on the line's ``in`` side, False on its ``out`` side, None on it or beyond its ends."""
    offset = _offset(line, x, y)
    return None if not offset else offset < 0


def _count_line(number: int, line: CountLine, paths: dict[int, Path], classes: dict[int, str],
                frames: list[int], times: list[float]) -> dict[str, Any]:
    (sx, sy), (ex, ey) = line.points
    dx, dy, length = ex - sx, ey - sy, math.hypot(ex - sx, ey - sy)
    crossings = []
    for tid, path in paths.items():
        settled: bool | None = None  # the side the track is on (True: in), once clearly there
        run_side, run_start, run = False, 0, 0  # the samples in a row clearly on the other side
        for i, x, y, w, h in path:
            distance = _offset(line.points, x, y)
            if distance is None:
                continue  # beyond the line's ends: as if not seen
            margin = line.margin * (abs(dy) * w + abs(dx) * h) / length / 100 if line.relative else line.margin
            if abs(distance) <= margin:
                run = 0  # back on the line: a run past it starts again
                continue
            side = distance < 0
            if side == settled:
                run = 0
                continue
            if run and side == run_side:
                run += 1
            else:
                run_side, run_start, run = side, i, 1
            if run >= line.samples:
                if settled is not None:
                    crossings.append({"tracker_id": tid, "class": classes.get(tid, ""),
                                      "direction": "in" if side else "out", "frame_offset": frames[run_start],
                                      "time_offset": times[run_start], "_sample": run_start})
                settled, run = side, 0
    crossings.sort(key=lambda c: (c["_sample"], c["tracker_id"]))
    cum_in, cum_out = [0] * len(frames), [0] * len(frames)
    for c in crossings:
        target = cum_in if c["direction"] == "in" else cum_out
        target[c.pop("_sample")] += 1
    for cum in (cum_in, cum_out):
        for i in range(1, len(cum)):
            cum[i] += cum[i - 1]
    ins = Counter(c["class"] for c in crossings if c["direction"] == "in")
    outs = Counter(c["class"] for c in crossings if c["direction"] == "out")
    return {"name": f"line {number}", "points": [list(p) for p in line.points],
            "margin": line.margin_value, "samples": line.samples,
            "in": dict(sorted(ins.items())), "out": dict(sorted(outs.items())),
            "total_in": sum(ins.values()), "total_out": sum(outs.values()),
            "crossings": crossings, "cumulative_in": cum_in, "cumulative_out": cum_out}


def _count_zone(number: int, zone: Points, paths: dict[int, Path],
                classes: dict[int, str], samples: int, times: list[float], fps: float) -> dict[str, Any]:
    import numpy as np
    import supervision as sv

    polygon = sv.PolygonZone(np.round(np.array(zone, dtype=np.float64)).astype(int),
                             triggering_anchors=(sv.Position.CENTER,))
    present = [0] * samples
    per_track = []
    dwell: Counter[str] = Counter()
    objects: Counter[str] = Counter()
    for tid, path in sorted(paths.items()):
        xy = np.array([[x - 0.5, y - 0.5, x + 0.5, y + 0.5] for _, x, y, _, _ in path], dtype=np.float32)
        inside = polygon.trigger(sv.Detections(xyxy=xy))
        runs: list[list[int]] = []
        previous_in = False
        for (i, *_), is_in in zip(path, inside):
            if is_in:
                if previous_in:
                    runs[-1][1] = i
                else:
                    runs.append([i, i])
            previous_in = bool(is_in)
        if not runs:
            continue
        for a, b in runs:  # a visit's missed samples (a detection lost for a moment) count as present
            for i in range(a, b + 1):
                present[i] += 1
        seconds = sum(times[b] - times[a] + 1.0 / fps for a, b in runs)
        cls = classes.get(tid, "")
        dwell[cls] += seconds
        objects[cls] += 1
        per_track.append({"tracker_id": tid, "class": cls, "first_time": times[runs[0][0]],
                          "last_time": times[runs[-1][1]], "visits": len(runs),
                          "dwell_seconds": round(seconds, 4)})
    return {"name": f"zone {number}", "points": [list(p) for p in zone],
            "objects": dict(sorted(objects.items())), "total_objects": sum(objects.values()),
            "dwell_seconds": {k: round(v, 4) for k, v in sorted(dwell.items())},
            "max_present": max(present, default=0), "present": present, "tracks": per_track}

"""Counting over tracked results: line crossings (in / out, per class) and zone occupancy and dwell.

Runs after ``vidinfer.core.tracking.track_results`` (it reads ``tracker_id`` and ``results["tracks"]``)
and writes ``results["counts"]``; the shape is documented in the README ("Tracking and counting").

The point of a box that counts is its centre, for lines and zones alike.

- **Lines** follow supervision's ``LineZone`` convention (a test checks that both agree): walking from
  the line's first point to its second, an object that crosses to the left-hand side is ``in``, to the
  right-hand side ``out`` (a line drawn left to right: moving up the image is ``in``). Only crossings
  within the segment count (between the perpendiculars through its ends). Each track's positions are
  compared sample to sample over its whole life, so a track missed for a few samples while it crosses
  still counts once; a track that comes back counts again.
- **Zones** use supervision's ``PolygonZone`` (centre anchor) on every sample. ``present`` counts the
  tracked objects inside at each sample; a track's *visit* is a run of its samples inside the zone, and
  its dwell is the time from the first to the last sample of each visit plus one sample period (so a
  visit seen on n consecutive samples lasts n / infer_fps seconds); samples where a visiting track was
  missed count as present.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from vidinfer.core.tracking import COUNTS_KEY, TRACKS_KEY, sampling_rate

Points = Sequence[tuple[float, float]]


def count_results(results: dict[str, Any], lines: Sequence[Points], zones: Sequence[Points],
                  infer_fps: float | None = None) -> dict[str, Any]:
    """Count crossings of ``lines`` and presence in ``zones`` for every tracked model; returns ``results``."""
    fps = float(infer_fps) if infer_fps else sampling_rate(results)
    times: list[float] = results["time_offset"]
    frames: list[int] = results["frame_offset"]
    counts: dict[str, Any] = {}
    for key, tracks in (results.get(TRACKS_KEY) or {}).items():
        classes = {t["tracker_id"]: t["class"] for t in tracks}
        # tracker_id -> [(sample, cx, cy)], in sample order
        paths: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
        for i, entry in enumerate(results[key]):
            for p in (entry or {}).get("predictions") or []:
                if p.get("tracker_id") is not None:
                    paths[p["tracker_id"]].append((i, float(p["x"]), float(p["y"])))
        counts[key] = {
            "lines": [_count_line(n, line, paths, classes, frames, times) for n, line in enumerate(lines, 1)],
            "zones": [_count_zone(n, zone, paths, classes, len(frames), times, fps) for n, zone in enumerate(zones, 1)],
        }
    results[COUNTS_KEY] = counts
    return results


def _side(line: Points, x: float, y: float) -> bool | None:
    """True on the line's ``in`` side, False on its ``out`` side, None on it or beyond its ends."""
    (sx, sy), (ex, ey) = line
    dx, dy = ex - sx, ey - sy
    along = (x - sx) * dx + (y - sy) * dy
    if along < 0 or along > dx * dx + dy * dy:
        return None
    cross = dx * (y - sy) - dy * (x - sx)
    return None if cross == 0 else cross < 0


def _count_line(number: int, line: Points, paths: dict[int, list[tuple[int, float, float]]],
                classes: dict[int, str], frames: list[int], times: list[float]) -> dict[str, Any]:
    crossings = []
    for tid, path in paths.items():
        last: bool | None = None
        for i, x, y in path:
            side = _side(line, x, y)
            if side is None:
                continue
            if last is not None and side != last:
                crossings.append({"tracker_id": tid, "class": classes.get(tid, ""), "direction": "in" if side else "out",
                                  "frame_offset": frames[i], "time_offset": times[i], "_sample": i})
            last = side
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
    return {"name": f"line {number}", "points": [list(p) for p in line],
            "in": dict(sorted(ins.items())), "out": dict(sorted(outs.items())),
            "total_in": sum(ins.values()), "total_out": sum(outs.values()),
            "crossings": crossings, "cumulative_in": cum_in, "cumulative_out": cum_out}


def _count_zone(number: int, zone: Points, paths: dict[int, list[tuple[int, float, float]]],
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
        xy = np.array([[x - 0.5, y - 0.5, x + 0.5, y + 0.5] for _, x, y in path], dtype=np.float32)
        inside = polygon.trigger(sv.Detections(xyxy=xy))
        runs: list[list[int]] = []
        previous_in = False
        for (i, _, _), is_in in zip(path, inside):
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

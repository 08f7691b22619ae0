"""Tracking and counting over results files whose answer is known by construction.

Objects move at known speeds in a 30 fps video sampled at 5 samples per second (the README's
default), so every sample is 6 frames and 0.2 s apart. A results file is built as the pipeline writes
it (one entry per sample, boxes as centre x, y, width, height in source pixels), with detections
missed where a test says so.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable
from fractions import Fraction

import numpy as np
import pytest

from vidinfer.core.chunks import merge_results, plan_chunks
from vidinfer.core.counting import _side, count_results
from vidinfer.core.tracking import AnalysisOptions, analyse, track_results
from vidinfer.errors import InvalidInput

VIDEO_FPS, INFER_FPS = 30, 5
STEP = VIDEO_FPS // INFER_FPS


class Obj:
    """A square of ``size`` px whose centre is ``at(t)``; absent where ``at`` returns None or at ``missed`` samples."""

    def __init__(self, at: Callable[[float], tuple[float, float] | None], cls: str = "car", size: float = 60,
                 missed: Iterable[int] = (), confidence: float = 0.9) -> None:
        self.at, self.cls, self.size, self.missed, self.confidence = at, cls, size, set(missed), confidence


def moving(x0: float, y0: float, vx: float, vy: float, start: float = 0.0, end: float = 1e9):
    return lambda t: (x0 + vx * (t - start), y0 + vy * (t - start)) if start <= t <= end else None


def make_results(objects: list[Obj], seconds: float, key: str = "det", nulls: Iterable[int] = ()) -> dict:
    samples = int(seconds * INFER_FPS)
    frames = [k * STEP for k in range(samples)]
    results: dict = {"frame_offset": frames, "time_offset": [round(f / VIDEO_FPS, 4) for f in frames], key: []}
    classes = sorted({o.cls for o in objects})
    for k, t in enumerate(results["time_offset"]):
        if k in set(nulls):
            results[key].append(None)
            continue
        preds = []
        for o in objects:
            c = o.at(t)
            if c is None or k in o.missed:
                continue
            preds.append({"x": round(c[0], 1), "y": round(c[1], 1), "width": o.size, "height": o.size,
                          "confidence": o.confidence, "class": o.cls, "class_id": classes.index(o.cls),
                          "detection_id": str(uuid.uuid4())})
        results[key].append({"time": 0.01, "image": {"width": 1280, "height": 720}, "predictions": preds})
    return results


def ids_by_object(results: dict, objects: list[Obj], key: str = "det") -> list[set]:
    """For each object, the tracker ids its detections got (matched by position)."""
    out: list[set] = [set() for _ in objects]
    for k, t in enumerate(results["time_offset"]):
        entry = results[key][k]
        for p in (entry or {}).get("predictions", []):
            n = min(range(len(objects)), key=lambda i: _dist(objects[i].at(t), p))
            out[n].add(p["tracker_id"])
    return out


def _dist(c, p) -> float:  # noqa: ANN001
    return float("inf") if c is None else abs(c[0] - p["x"]) + abs(c[1] - p["y"])


# -- tracking -----------------------------------------------------------------------------
def test_squares_at_known_speeds_keep_one_id_each_through_missed_detections() -> None:
    objects = [Obj(moving(100, 100, 150, 0)),                           # 30 px per sample
               Obj(moving(100, 300, 300, 20), missed=(10, 11)),          # two samples lost
               Obj(moving(1100, 500, -100, 0), cls="person", missed=(20, 21, 22))]
    results = track_results(make_results(objects, seconds=6), INFER_FPS)
    ids = ids_by_object(results, objects)
    assert ids == [{1}, {2}, {3}]  # numbered by first appearance; the first detection has its id too
    tracks = {t["tracker_id"]: t for t in results["tracks"]["det"]}
    assert tracks[1] == {"tracker_id": 1, "class": "car", "class_id": 0, "first_frame": 0, "last_frame": 29 * STEP,
                         "first_time": 0.0, "last_time": 5.8, "frames_seen": 30}
    assert tracks[2]["frames_seen"] == 28 and tracks[3]["frames_seen"] == 27
    assert tracks[3]["class"] == "person"


def test_a_lost_track_survives_its_buffer_not_longer() -> None:
    gap_ok = Obj(moving(100, 100, 100, 0), missed=range(10, 14))   # 0.8 s without a detection (< 1 s)
    gap_long = Obj(moving(100, 400, 100, 0), missed=range(10, 18))  # 1.6 s: a new track afterwards
    results = track_results(make_results([gap_ok, gap_long], seconds=6), INFER_FPS)
    ok, long = ids_by_object(results, [gap_ok, gap_long])
    assert len(ok) == 1 and len(long) == 2


def test_two_objects_crossing_keep_their_ids() -> None:
    a = Obj(moving(100, 300, 200, 0))
    b = Obj(moving(1100, 330, -200, 0), cls="car")  # they pass each other around t = 2.5 s, boxes overlapping
    results = track_results(make_results([a, b], seconds=5), INFER_FPS)
    for obj_ids in ids_by_object(results, [a, b]):
        assert len(obj_ids) == 1 and None not in obj_ids
    # and each id's x moves one way only
    xs: dict[int, list[float]] = {}
    for entry in results["det"]:
        for p in entry["predictions"]:
            xs.setdefault(p["tracker_id"], []).append(p["x"])
    assert sorted(xs) == [1, 2]
    assert xs[1] == sorted(xs[1]) and xs[2] == sorted(xs[2], reverse=True)


def test_a_one_off_detection_gets_no_id_and_null_frames_are_skipped() -> None:
    steady = Obj(moving(200, 200, 50, 0))
    blip = Obj(lambda t: (900.0, 600.0) if 1.95 < t < 2.05 else None)
    results = track_results(make_results([steady, blip], seconds=4, nulls=(5, 6)), INFER_FPS)
    steady_ids, blip_ids = ids_by_object(results, [steady, blip])
    assert steady_ids == {1} and blip_ids == {None}
    assert results["det"][5] is None and len(results["tracks"]["det"]) == 1


def test_ids_follow_the_sampling_rate_given_or_read_from_the_offsets() -> None:
    objects = [Obj(moving(100, 100, 150, 0), missed=(5, 6))]
    given = track_results(make_results(objects, seconds=3), INFER_FPS)
    guessed = track_results(make_results(objects, seconds=3))
    assert given["tracks"] == guessed["tracks"]


def test_only_detection_shaped_models_are_tracked() -> None:
    results = make_results([Obj(moving(100, 100, 10, 0))], seconds=1)
    results["cls"] = [{"time": 0.0, "image": {"width": 1, "height": 1}, "top": "a", "confidence": 0.9,
                       "predictions": [{"class": "a", "class_id": 0, "confidence": 0.9}]}] * 5
    results["clip"] = [{"time": 0.0, "embeddings": [[0.1, 0.2]]}] * 5
    track_results(results, INFER_FPS)
    assert list(results["tracks"]) == ["det"]
    assert "tracker_id" not in results["cls"][0]["predictions"][0]


def _strip_ids(results: dict) -> dict:
    out = copy.deepcopy(results)
    for entry in out["det"]:
        for p in (entry or {}).get("predictions", []):
            p.pop("tracker_id", None)
    out.pop("tracks", None)
    out.pop("counts", None)
    return out


@pytest.mark.parametrize("chunk_seconds", [0.4, 1.0, 2.2])
def test_tracking_after_the_merge_equals_the_single_pass(chunk_seconds: float) -> None:
    """What the distributed engine does: chunks are inferred apart, merged, then tracked once."""
    objects = [Obj(moving(100, 100, 150, 0), missed=(9, 10)), Obj(moving(1100, 330, -200, 0)),
               Obj(moving(100, 600, 100, -50), cls="person")]
    whole = make_results(objects, seconds=6)
    options = AnalysisOptions.parse("bytetrack", lines=[[[600, 0], [600, 720]]], zones=[[0, 0, 640, 0, 640, 720, 0, 720]])
    single = analyse(copy.deepcopy(whole), options, INFER_FPS)
    chunks = plan_chunks(len(whole["frame_offset"]), Fraction(INFER_FPS), chunk_seconds)
    assert len(chunks) > 1
    parts = [{k: copy.deepcopy(v[c.k_first:c.k_stop]) for k, v in whole.items()} for c in chunks]
    merged = analyse(merge_results(parts), options, INFER_FPS)
    assert merged == single
    assert _strip_ids(merged) == whole  # tracking only adds tracker_id, tracks and counts


# -- counting -----------------------------------------------------------------------------
def test_n_squares_crossing_a_line_count_n_in_the_right_direction() -> None:
    # a horizontal line drawn left to right at y = 360: moving down the image is "out", up is "in"
    down = [Obj(moving(150 + 200 * n, 100 + 40 * n, 0, 120), cls="car") for n in range(4)]
    up = [Obj(moving(250 + 300 * n, 650, 0, -150), cls="person") for n in range(2)]
    beside = Obj(moving(1250, 100, 0, 120))  # crosses y = 360 beyond the line's end: not counted
    results = make_results([*down, *up, beside], seconds=5)
    analyse(results, AnalysisOptions.parse(lines=["0,360,1200,360"]), INFER_FPS)
    line = results["counts"]["det"]["lines"][0]
    assert line["out"] == {"car": 4} and line["in"] == {"person": 2}
    assert (line["total_in"], line["total_out"]) == (2, 4)
    assert line["points"] == [[0.0, 360.0], [1200.0, 360.0]] and line["name"] == "line 1"
    assert len(line["crossings"]) == 6 and len({c["tracker_id"] for c in line["crossings"]}) == 6
    first = line["crossings"][0]
    assert first["frame_offset"] == results["frame_offset"][results["time_offset"].index(first["time_offset"])]
    # counts over time: cumulative, one per sample
    assert len(line["cumulative_in"]) == len(results["frame_offset"])
    assert line["cumulative_in"][-1] == 2 and line["cumulative_out"][-1] == 4
    assert all(a <= b for a, b in zip(line["cumulative_out"], line["cumulative_out"][1:]))
    # the same line drawn the other way round swaps in and out
    reverse = analyse(make_results([*down, *up], seconds=5), AnalysisOptions.parse(lines=["1200,360,0,360"]))
    assert reverse["counts"]["det"]["lines"][0]["in"] == {"car": 4}


def test_a_crossing_during_missed_detections_counts_once() -> None:
    obj = Obj(moving(300, 100, 0, 150), missed=(8, 9, 10))  # at y = 340, 370, 400: lost while crossing y = 360
    results = analyse(make_results([obj], seconds=5), AnalysisOptions.parse(lines=[[[0, 360], [1200, 360]]]))
    line = results["counts"]["det"]["lines"][0]
    assert line["total_out"] == 1 and line["total_in"] == 0
    assert line["crossings"][0]["time_offset"] == 2.2  # the first sample seen on the other side


def _jitter(amplitude: float, seed: int = 1) -> Callable[[float], float]:
    """A centre offset that wobbles by up to ``amplitude`` px each sample, crossing 0 again and again."""
    wobble = np.random.default_rng(seed).uniform(-amplitude, amplitude, 1000)
    return lambda t: float(wobble[round(t * INFER_FPS)])


def test_a_person_standing_on_the_line_never_counts() -> None:
    """Issue 14.11: a box of ~100 px whose centre jitters a few pixels around the line gave 6 of 11
    crossings. By default a track must be a quarter of its box past the line on two samples in a row."""
    wobble = _jitter(8)
    standing = Obj(lambda t: (600.0, 360.0 + wobble(t)), cls="person", size=100)
    results = analyse(make_results([standing], seconds=12), AnalysisOptions.parse(lines=["0,360,1200,360"]), INFER_FPS)
    line = results["counts"]["det"]["lines"][0]
    assert {p["tracker_id"] for e in results["det"] for p in e["predictions"]} == {1}  # one track all along
    assert line["crossings"] == [] and (line["total_in"], line["total_out"]) == (0, 0)
    assert (line["margin"], line["samples"]) == ("25%", 2)
    # without margin nor run (the old rule) the same track counts at nearly every wobble
    loose = analyse(make_results([standing], seconds=12),
                    AnalysisOptions.parse(lines=["0,360,1200,360:margin=0,samples=1"]), INFER_FPS)
    assert len(loose["counts"]["det"]["lines"][0]["crossings"]) > 10
    # a wider wobble is still not a crossing with a wider margin in pixels, nor with a longer run
    wide_wobble = _jitter(30, seed=2)
    wide = Obj(lambda t: (600.0, 360.0 + wide_wobble(t)), cls="person", size=100)
    for rule in ("margin=35", "margin=0,samples=6"):
        counted = analyse(make_results([wide], seconds=12), AnalysisOptions.parse(lines=[f"0,360,1200,360:{rule}"]))
        assert counted["counts"]["det"]["lines"][0]["crossings"] == [], rule


def test_a_clean_walk_across_and_back_counts_once_each_way() -> None:
    """A person (100 px box) walks down at 60 px/s, stands a second on the line, walks on across it,
    turns and walks back, wobbling 3 px: one "out" once a quarter of its box is past the line, one "in"."""
    wobble = _jitter(3, seed=3)

    def walk(t: float) -> tuple[float, float]:
        if t < 6:  # down: y = 360 (the line) from t = 2.5 to 3.5, then on to y = 510 at t = 6
            y = 210 + 60 * min(t, 2.5) + 60 * max(0.0, t - 3.5)
        else:  # back up
            y = 510 - 60 * (t - 6)
        return 600.0, y + wobble(t)

    person = Obj(walk, cls="person", size=100)
    results = analyse(make_results([person], seconds=12), AnalysisOptions.parse(lines=[[[0, 360], [1200, 360]]]),
                      INFER_FPS)
    line = results["counts"]["det"]["lines"][0]
    assert (line["out"], line["in"]) == ({"person": 1}, {"person": 1}), line["crossings"]
    out, back = line["crossings"]
    assert out["direction"] == "out" and back["direction"] == "in"
    assert 3.9 <= out["time_offset"] <= 4.1  # y > 385 (25 px past) from t = 3.92
    assert 8.9 <= back["time_offset"] <= 9.1  # y < 335 from t = 8.92
    # the same walk through a line given as an object with its own margin and run
    strict = analyse(make_results([person], seconds=12), AnalysisOptions.parse(
        lines=[{"points": [[0, 360], [1200, 360]], "margin": 60, "samples": 3}]), INFER_FPS)
    line = strict["counts"]["det"]["lines"][0]
    assert (line["total_out"], line["total_in"], line["margin"], line["samples"]) == (1, 1, 60.0, 3)


def test_the_line_convention_is_supervisions_linezone() -> None:
    import supervision as sv

    rng = np.random.default_rng(0)
    for _ in range(50):
        (sx, sy), (ex, ey) = rng.uniform(0, 500, (2, 2))
        zone = sv.LineZone(sv.Point(sx, sy), sv.Point(ex, ey), triggering_anchors=[sv.Position.CENTER])
        ours = []
        path = rng.uniform(0, 500, (30, 2))
        last = None
        for x, y in path:
            crossed_in, crossed_out = zone.trigger(sv.Detections(
                xyxy=np.array([[x - 1, y - 1, x + 1, y + 1]]), class_id=np.array([0]), tracker_id=np.array([1])))
            side = _side(((sx, sy), (ex, ey)), x, y)
            expected = None if side is None or last is None or side == last else ("in" if side else "out")
            if side is not None:
                last = side
            got = "in" if crossed_in[0] else "out" if crossed_out[0] else None
            ours.append((expected, got))
        assert all(e == g for e, g in ours), ours


def test_a_square_in_a_zone_for_two_seconds_dwells_two_seconds() -> None:
    # parked at (300, 300) from t = 1.0 to t = 3.0 (exclusive), else far away; a second one passes through
    parked = Obj(lambda t: (300.0, 300.0) if 1.0 <= t < 2.99 else (900.0, 300.0 + 10 * t), cls="car")
    passing = Obj(moving(0, 500, 200, 0), cls="person", missed=(5,))
    results = analyse(make_results([parked, passing], seconds=5),
                      AnalysisOptions.parse(zones=[[[100, 100], [500, 100], [500, 600], [100, 600]]]), INFER_FPS)
    zone = results["counts"]["det"]["zones"][0]
    tracks = {t["class"]: t for t in zone["tracks"]}
    assert abs(tracks["car"]["dwell_seconds"] - 2.0) <= 1 / INFER_FPS + 1e-9
    assert tracks["car"]["first_time"] == 1.0 and tracks["car"]["last_time"] == 2.8
    assert zone["objects"] == {"car": 1, "person": 1} and zone["total_objects"] == 2
    # the walker is inside for x in (100, 500): t in (0.5, 2.5), seen at 0.6 .. 2.4, sample 5 missed but present
    assert abs(tracks["person"]["dwell_seconds"] - 2.0) <= 1 / INFER_FPS + 1e-9
    present = zone["present"]
    assert len(present) == len(results["frame_offset"]) and zone["max_present"] == 2
    assert present[5] == 2 and present[0] == 0 and present[-1] == 0
    assert zone["dwell_seconds"]["car"] == tracks["car"]["dwell_seconds"]


def test_counting_without_tracks_counts_nothing() -> None:
    results = make_results([Obj(moving(0, 0, 10, 10))], seconds=1)
    count_results(results, [((0, 5), (10, 5))], [])
    assert results["counts"] == {}


# -- options -----------------------------------------------------------------------------
@pytest.mark.parametrize(("tracker", "lines", "zones", "error"), [
    ("sort", None, None, "unknown tracker"),
    (None, ["0,0,10"], None, "pairs"),
    (None, ["0,0,10,10,20,20"], None, "2 points"),
    (None, [[[0, 0], [0, 0]]], None, "two different points"),
    (None, None, ["0,0,10,10"], "at least 3"),
    (None, None, [[[0, 0, 1], [1, 1], [2, 2]]], r"list of \[x, y\] points"),
    (None, ["a,b,c,d"], None, r"list of \[x, y\] points"),
    (None, [[0, 0, float("nan"), 1]], None, "finite"),
    (None, ["0,0,10,10:margin=-1"], None, "margin is pixels"),
    (None, ["0,0,10,10:margin=150%"], None, "0% to 100%"),
    (None, ["0,0,10,10:margin=wide"], None, "margin is pixels"),
    (None, ["0,0,10,10:samples=0"], None, "samples is a whole number"),
    (None, ["0,0,10,10:samples=1.5"], None, "samples is a whole number"),
    (None, ["0,0,10,10:speed=3"], None, "unknown line option 'speed'"),
    (None, ["0,0,10,10:margin"], None, "name=value"),
    (None, [{"margin": 3}], None, "points"),
    (None, [{"points": [[0, 0], [10, 10]], "samples": True}], None, "samples is a whole number"),
])
def test_bad_options_are_refused(tracker, lines, zones, error) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInput, match=error):
        AnalysisOptions.parse(tracker, lines, zones)


def test_options_round_trip_and_imply_tracking() -> None:
    options = AnalysisOptions.parse(None, ["0, 1, 2, 3"], [[0, 0, 4, 0, 4, 4]])
    assert options.tracker == "bytetrack" and options.tracking
    assert AnalysisOptions.from_dict(options.as_dict()) == options
    assert options.as_dict() == {"tracker": "bytetrack", "lines": [[[0.0, 1.0], [2.0, 3.0]]],
                                 "zones": [[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]]]}
    assert AnalysisOptions.parse().empty and AnalysisOptions.parse().as_dict() == {}
    custom = AnalysisOptions.parse(None, ["0,1,2,3:margin=12.5%,samples=3", "0,1,2,3: margin = 20"])
    assert custom.as_dict()["lines"] == [{"points": [[0.0, 1.0], [2.0, 3.0]], "margin": "12.5%", "samples": 3},
                                         {"points": [[0.0, 1.0], [2.0, 3.0]], "margin": 20.0, "samples": 2}]
    assert AnalysisOptions.from_dict(custom.as_dict()) == custom
    results = make_results([Obj(moving(0, 0, 10, 10))], seconds=1)
    assert "tracks" not in analyse(results, AnalysisOptions())


def test_a_track_never_passes_from_one_class_to_another() -> None:
    """A scene cut: a person, then a cat in the same place. Two tracks, not one."""
    from vidinfer.core.tracking import track_results

    frames = list(range(0, 60, 6))
    entries = []
    for i in range(len(frames)):
        cls, cid = ("person", 0) if i < 5 else ("cat", 15)
        entries.append({"time": 0.0, "image": {"width": 640, "height": 360}, "predictions": [
            {"x": 300.0, "y": 180.0, "width": 100.0, "height": 200.0, "confidence": 0.9, "class": cls,
             "class_id": cid, "detection_id": str(i)}]})
    results = {"frame_offset": frames, "time_offset": [f / 30 for f in frames], "m": entries}
    track_results(results, 5.0)
    ids = [e["predictions"][0]["tracker_id"] for e in results["m"]]
    assert ids[:5] == [1] * 5 and ids[5:] == [2] * 5
    assert [t["class"] for t in results["tracks"]["m"]] == ["person", "cat"]

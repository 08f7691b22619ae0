"""``vidinfer diff`` and ``GET /videoinfer/diff``: two runs on one video, compared.

Exact expectations come from hand-built results tables (matching, alignment, per minute, refusals);
the end-to-end tests compare the results of real runs: two tiny ONNX detectors (tests/onnx_graphs.py)
whose boxes are known, run by ``vidinfer infer`` and by a real ``vidinfer serve`` on a generated video.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from onnx_graphs import constant_model, rows_output, ultralytics_metadata
from server import Server
from videos import make_video

from vidinfer.diff import COLOR_A, COLOR_B, Box, compare, match
from vidinfer.errors import InvalidInput


def _p(cx: float, cy: float, w: float, h: float, cls: str = "person", conf: float = 0.9) -> dict[str, Any]:
    return {"x": cx, "y": cy, "width": w, "height": h, "confidence": conf, "class": cls, "class_id": 0}


def _results(preds: list[list[dict[str, Any]]], key: str = "m", frames: list[int] | None = None, fps: float = 1.0,
             video: dict[str, Any] | None = None) -> dict[str, Any]:
    frames = frames if frames is not None else list(range(len(preds)))
    out: dict[str, Any] = {"frame_offset": frames, "time_offset": [f / fps for f in frames],
                           key: [{"time": 0.01, "image": {"width": 640, "height": 480}, "predictions": p}
                                 for p in preds]}
    if video is not None:
        out["video"] = video
    return out


# -- exact expectations on hand-built tables --------------------------------------------------
MATCH_CASES = [
    # (case, A's boxes, B's boxes, expected (i, j) pairs at IoU 0.5)
    ("same box", [Box("p", 50, 50, 20, 20, 0.9)], [Box("p", 50, 50, 20, 20, 0.5)], [(0, 0)]),
    ("shifted a little (IoU 0.82)", [Box("p", 50, 50, 20, 20, 0.9)], [Box("p", 52, 50, 20, 20, 0.5)], [(0, 0)]),
    ("shifted a lot (IoU 0.33)", [Box("p", 50, 50, 20, 20, 0.9)], [Box("p", 60, 50, 20, 20, 0.5)], []),
    ("another class", [Box("p", 50, 50, 20, 20, 0.9)], [Box("car", 50, 50, 20, 20, 0.9)], []),
    ("the best overlap wins, once", [Box("p", 50, 50, 20, 20, 0.9), Box("p", 53, 50, 20, 20, 0.9)],
     [Box("p", 54, 50, 20, 20, 0.9)], [(1, 0)]),
    ("nothing on one side", [], [Box("p", 50, 50, 20, 20, 0.9)], []),
]


@pytest.mark.parametrize(("case", "a", "b", "pairs"), MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_boxes_of_one_class_pair_greedily_by_iou(case: str, a: list[Box], b: list[Box],
                                                 pairs: list[tuple[int, int]]) -> None:
    assert [(i, j) for i, j, _ in match(a, b, 0.5)] == pairs


def test_per_class_per_minute_and_top_samples_are_exact() -> None:
    # samples at 0 s, 30 s, 70 s, 100 s: minutes 0, 0, 1, 1
    a = _results([
        [_p(100, 100, 40, 40, conf=0.9), _p(300, 100, 40, 80, "car", 0.8)],  # B: person matched, car missed
        [_p(100, 100, 40, 40, conf=0.7)],  # B: matched, and one extra person
        [],  # B: two cars A lacks
        [_p(200, 200, 50, 50, conf=0.6)],  # B: the same box
    ], frames=[0, 30, 70, 100])
    b = _results([
        [_p(102, 100, 40, 40, conf=0.6)],
        [_p(100, 100, 40, 40, conf=0.8), _p(400, 300, 30, 60, conf=0.4)],
        [_p(50, 50, 20, 20, "car", 0.5), _p(500, 50, 20, 20, "car", 0.55)],
        [_p(200, 200, 50, 50, conf=0.6)],
    ], frames=[0, 30, 70, 100])
    doc = compare(a, b, top=2)
    assert doc["per_class"] == {
        "car": {"count_a": 1, "count_b": 2, "matched": 0, "only_a": 1, "only_b": 2, "confidence_shift": None,
                "mean_iou": None, "precision": 0.0, "recall": 0.0},
        "person": {"count_a": 3, "count_b": 4, "matched": 3, "only_a": 0, "only_b": 1,
                   "confidence_shift": round((-0.3 + 0.1 + 0.0) / 3, 4), "mean_iou": round((38 / 42 + 1 + 1) / 3, 4),
                   "precision": 0.75, "recall": 1.0},
    }
    assert doc["totals"] == {"count_a": 4, "count_b": 6, "matched": 3, "only_a": 1, "only_b": 3, "disagreements": 4,
                             "disagreement_rate": round(4 / 7, 4), "confidence_shift": round(-0.2 / 3, 4),
                             "precision": 0.5, "recall": 0.75, "samples_with_disagreement": 3}
    assert doc["per_minute"] == [
        {"minute": 0, "samples": 2, "matched": 2, "only_a": 1, "only_b": 1, "disagreements": 2,
         "disagreement_rate": 0.5, "per_class": {"car": 1, "person": 1}},
        {"minute": 1, "samples": 2, "matched": 1, "only_a": 0, "only_b": 2, "disagreements": 2,
         "disagreement_rate": round(2 / 3, 4), "per_class": {"car": 2}},
    ]
    # most disagreements first, then the earlier sample; only --top of them
    assert [(s["frame_offset"], s["only_a"], s["only_b"]) for s in doc["top_samples"]] == [(70, 0, 2), (0, 1, 0)]
    assert doc["top_samples"][1]["only_a_boxes"] == [{"class": "car", "x": 300.0, "y": 100.0, "width": 40.0,
                                                      "height": 80.0, "confidence": 0.8}]
    assert doc["samples"] == {"compared": 4, "only_in_a": 0, "only_in_b": 0, "null": 0}
    assert doc["params"] == {"a": "A", "b": "B", "model_a": "m", "model_b": "m", "iou": 0.5, "top": 2}
    assert doc["warnings"] == ["a results file does not say which video it was made from (an older file): not checked"]
    # a looser IoU pairs what a strict one does not
    one, shifted = _results([[_p(50, 50, 20, 20)]]), _results([[_p(60, 50, 20, 20)]])  # IoU 1/3
    assert compare(one, shifted, iou=0.3)["totals"]["matched"] == 1
    assert compare(one, shifted)["totals"]["matched"] == 0


def test_samples_are_aligned_on_common_frame_offsets() -> None:
    a = _results([[_p(10, 10, 10, 10)]] * 4, frames=[0, 10, 20, 30])
    b = _results([[_p(10, 10, 10, 10)]] * 3, frames=[0, 15, 30])
    doc = compare(a, b)
    assert doc["samples"] == {"compared": 2, "only_in_a": 2, "only_in_b": 1, "null": 0}
    assert doc["totals"]["matched"] == 2 and doc["totals"]["disagreements"] == 0 and doc["top_samples"] == []
    assert "2 samples only in A and 1 only in B were left out" in doc["warnings"][-1]
    with pytest.raises(InvalidInput) as none:
        compare(a, _results([[]], frames=[5]))
    assert none.value.code == "results_mismatch"


def test_a_null_entry_is_no_verdict_not_a_disagreement() -> None:
    """``null``: the frame failed on that side (a partial run); its boxes are unknown, not absent."""
    a = _results([[_p(10, 10, 10, 10)], [_p(10, 10, 10, 10)]])
    b = _results([[_p(10, 10, 10, 10)], [_p(10, 10, 10, 10)]])
    b["m"][1] = None
    doc = compare(a, b)
    assert doc["samples"] == {"compared": 1, "only_in_a": 0, "only_in_b": 0, "null": 1}
    assert doc["totals"]["only_a"] == 0 and doc["totals"]["matched"] == 1
    assert "null entry" in doc["warnings"][-1]


VIDEO = {"width": 640, "height": 480, "frame_count": 300, "duration": 10.0, "fps": 30.0}


def test_results_of_different_videos_are_refused_unless_forced() -> None:
    a = _results([[]], video=VIDEO)
    b = _results([[]], video={**VIDEO, "width": 1280})
    with pytest.raises(InvalidInput) as refused:
        compare(a, b)
    assert refused.value.code == "results_mismatch" and "640x480" in refused.value.message
    assert "compared anyway" in compare(a, b, force=True)["warnings"][0]
    assert compare(a, _results([[]], video={**VIDEO, "frame_count": 301}))["warnings"] == []  # one frame: same video


def test_the_detection_column_is_the_only_one_or_named() -> None:
    two = {**_results([[_p(10, 10, 10, 10)]], key="coco"),
           "mine": [{"predictions": [_p(10, 10, 10, 10, conf=0.5)]}],
           "imagenet": [{"predictions": [{"class": "cat", "confidence": 0.9}], "top": "cat"}],
           "tracks": {"coco": []}}
    with pytest.raises(InvalidInput) as ambiguous:
        compare(two, two)
    assert ambiguous.value.code == "unknown_model_column" and "coco, mine" in ambiguous.value.message
    doc = compare(two, two, model_a="coco", model_b="mine")
    assert doc["per_class"]["person"]["confidence_shift"] == -0.4
    with pytest.raises(InvalidInput) as classifier:
        compare(two, two, model_a="imagenet", model_b="mine")
    assert classifier.value.code == "unknown_model_column"
    empty = _results([[], []])  # a detector that found nothing is still a detection column
    assert compare(empty, empty)["totals"]["count_a"] == 0


@pytest.mark.parametrize(("a", "b", "code"), [
    ({"frame_offset": [0]}, _results([[]]), "invalid_results"),
    (_results([[{"x": "left", "y": 1, "width": 2, "height": 2, "class": "p"}]]), _results([[]]), "invalid_results"),
    (_results([[]], video=VIDEO), {**_results([[]]), "video": {"width": "wide"}}, "invalid_results"),
])
def test_malformed_results_get_a_code(a: dict[str, Any], b: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        compare(a, b)
    assert bad.value.code == code


# -- real runs ---------------------------------------------------------------------------------
NAMES = ["car", "dog"]
SIZE = (320, 240)  # letterboxed into 640x640: scale 2, 80 px of padding above and below
#: input-pixel rows (x1, y1, x2, y2, score, class) of the two detectors: the car seen by both (B a little to the
#: right, less sure), a dog each where the other sees none
ROWS_A = {0: [100, 180, 300, 380, 0.9, 0], 1: [400, 200, 500, 300, 0.8, 1]}
ROWS_B = {0: [110, 180, 310, 380, 0.6, 0], 1: [400, 400, 500, 500, 0.7, 1]}


def _detector(path: Path, rows: dict[int, list[float]]) -> Path:
    return constant_model(path, [rows_output(300, 6, rows)],
                          metadata=ultralytics_metadata("detect", NAMES, end2end=True))


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIDINFER_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "vidinfer.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("diff")
    video = make_video(d / "clip.mp4", frames=60, size=SIZE)
    out = {"video": video, "model_a": _detector(d / "a.onnx", ROWS_A), "model_b": _detector(d / "b.onnx", ROWS_B)}
    for side in ("a", "b"):
        out[side] = d / f"{side}.json"
        proc = _cli("infer", str(video), "-m", str(out[f"model_{side}"]), "--fps", "5", "-o", str(out[side]), "-q",
                    data_dir=d / "data")
        assert proc.returncode == 0, proc.stderr
    return out


EXPECTED_PER_CLASS = {
    "car": {"count_a": 10, "count_b": 10, "matched": 10, "only_a": 0, "only_b": 0, "confidence_shift": -0.3,
            "mean_iou": round(190 / 210, 4), "precision": 1.0, "recall": 1.0},
    "dog": {"count_a": 10, "count_b": 10, "matched": 0, "only_a": 10, "only_b": 10, "confidence_shift": None,
            "mean_iou": None, "precision": 0.0, "recall": 0.0},
}


def test_cli_diff_of_two_real_runs_as_json_and_tables(runs: dict[str, Path], tmp_path: Path) -> None:
    proc = _cli("diff", str(runs["a"]), str(runs["b"]), "--json", data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["params"]["model_a"] == "a" and doc["params"]["model_b"] == "b"
    assert doc["per_class"] == EXPECTED_PER_CLASS
    assert doc["samples"] == {"compared": 10, "only_in_a": 0, "only_in_b": 0, "null": 0}
    assert doc["warnings"] == []
    assert [s["frame_offset"] for s in doc["top_samples"]] == [0, 6, 12, 18, 24, 30, 36, 42]
    # in source pixels: A's dog at (200, 60)-(250, 110), B's at (200, 160)-(250, 210)
    first = doc["top_samples"][0]
    assert (first["only_a_boxes"][0]["x"], first["only_a_boxes"][0]["y"]) == (225.0, 85.0)
    assert (first["only_b_boxes"][0]["x"], first["only_b_boxes"][0]["y"]) == (225.0, 185.0)

    table = _cli("diff", str(runs["a"]), str(runs["b"]), "--top", "3", data_dir=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "only A" in table.stdout and "-0.300" in table.stdout and "0:00" in table.stdout
    assert "where they disagree most" in table.stdout


def _near(pixels: np.ndarray, bgr: tuple[int, int, int], tol: int = 45) -> np.ndarray:
    return (np.abs(pixels.astype(int) - np.array(bgr)) <= tol).all(axis=-1)


def test_png_chart_and_contact_sheet_draw_each_side_in_its_colour(runs: dict[str, Path], tmp_path: Path) -> None:
    chart = tmp_path / "out" / "diff.png"
    proc = _cli("diff", str(runs["a"]), str(runs["b"]), "--png", str(chart), "--video", str(runs["video"]),
                "--top", "3", data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    picture = cv2.imread(str(chart))
    assert picture is not None and picture.shape[1] == 1000 and picture.shape[0] > 300
    sheet = cv2.imread(str(tmp_path / "out" / "diff.sheet.png"))
    assert "contact sheet (3 samples" in proc.stderr
    # 3 tiles of 480 px (a caption band of 24 above 360 px of frame) in 2 columns: 2 rows
    assert sheet.shape == (2 * (24 + 360), 960, 3)
    tile = sheet[24:384, :480]
    scale = 480 / SIZE[0]

    def edge(x1: float, y1: float, x2: float) -> np.ndarray:  # the top edge of a source box, a little inside
        return tile[round(y1 * scale) - 1: round(y1 * scale) + 3, round(x1 * scale) + 6: round(x2 * scale) - 6]

    dog_a, dog_b = edge(200, 60, 250), edge(200, 160, 250)
    assert _near(dog_a, COLOR_A).mean() > 0.3 and not _near(dog_a, COLOR_B).any()
    assert _near(dog_b, COLOR_B).mean() > 0.3 and not _near(dog_b, COLOR_A).any()
    # the video itself is grey: neither colour away from the boxes
    assert not (_near(tile[300:, :100], COLOR_A) | _near(tile[300:, :100], COLOR_B)).any()


def test_cli_refuses_runs_on_different_videos_in_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    other = json.loads(runs["b"].read_text())
    other["video"]["width"] = 640
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = _cli("diff", str(runs["a"]), str(tmp_path / "other.json"), data_dir=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "different videos" in proc.stderr and "--force" in proc.stderr
    forced = _cli("diff", str(runs["a"]), str(tmp_path / "other.json"), "--force", "--json", data_dir=tmp_path)
    assert forced.returncode == 0 and json.loads(forced.stdout)["per_class"] == EXPECTED_PER_CLASS


# -- the API -----------------------------------------------------------------------------------
def test_api_diffs_two_finished_jobs_of_one_input(runs: dict[str, Path], tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", workers=1)
    for side in ("a", "b"):
        srv.data_dir.mkdir(parents=True, exist_ok=True)
        srv.cli("models", "add", f"det-{side}", str(runs[f"model_{side}"]))
    long_video = make_video(tmp_path / "long.mp4", frames=600, size=SIZE)
    with srv:
        key, other = srv.key("acme"), srv.key("other")
        url = srv.upload(key, runs["video"])
        jobs = {}
        for side in ("a", "b"):
            r = srv.submit(key, url, [{"model_id": f"det-{side}"}], infer_fps=5)
            assert r.status_code == 200, r.text
            jobs[side] = r.json()["job_id"]
        for job in jobs.values():
            assert srv.wait(key, job)["status"] == 0
        params = {"api_key": key, "job_a": jobs["a"], "job_b": jobs["b"]}
        r = httpx.get(f"{srv.url}/videoinfer/diff", params=params, timeout=60)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["per_class"] == EXPECTED_PER_CLASS
        assert doc["params"] == {"a": jobs["a"], "b": jobs["b"], "model_a": "det-a", "model_b": "det-b",
                                 "iou": 0.5, "top": 8}
        assert httpx.get(f"{srv.url}/videoinfer/diff", params={**params, "top": 2}).json()["top_samples"][1][
            "frame_offset"] == 6

        def error(**extra: Any) -> tuple[int, str]:
            r = httpx.get(f"{srv.url}/videoinfer/diff", params={**params, **extra}, timeout=60)
            return r.status_code, r.json()["error"]["code"]

        # another workspace's jobs are not found, exactly as an id that never existed
        assert error(api_key=other) == (404, "job_not_found") == error(job_b="0" * 32)
        assert error(model_a="nope") == (400, "unknown_model_column")
        assert error(iou=0) == (400, "invalid_request")
        # another input
        r = srv.submit(key, srv.upload(key, make_video(tmp_path / "other.mp4", frames=30, size=SIZE)),
                       [{"model_id": "det-b"}], infer_fps=5)
        assert srv.wait(key, r.json()["job_id"])["status"] == 0
        assert error(job_b=r.json()["job_id"]) == (400, "results_mismatch")
        # a job that has not finished (cancelled at once, or still queued or running)
        r = srv.submit(key, srv.upload(key, long_video), [{"model_id": "det-b"}], infer_fps=30)
        unfinished = r.json()["job_id"]
        cancelled = httpx.delete(f"{srv.url}/videoinfer", params={"api_key": key, "job_id": unfinished}).json()
        assert cancelled["state"] != "done"
        assert error(job_b=unfinished) == (400, "job_not_done")


def test_coco_at_two_thresholds_the_strict_run_is_inside_the_loose_one(tmp_path: Path) -> None:
    """Real photos through the built-in detector: what passes 0.5 also passes 0.05, box for box, so every
    box of B pairs with the same box of A (IoU 1, no confidence shift) and only A has boxes of its own."""
    from vidinfer.demo import build_demo_video

    video = build_demo_video(tmp_path / "demo.mp4")
    for name, conf in (("loose", 0.05), ("strict", 0.5)):
        proc = _cli("infer", str(video), "-m", f"coco:confidence={conf}", "--fps", "1", "--end", "4", "-o",
                    str(tmp_path / f"{name}.json"), "-q", data_dir=tmp_path / "data")
        assert proc.returncode == 0, proc.stderr
    proc = _cli("diff", str(tmp_path / "loose.json"), str(tmp_path / "strict.json"), "--json", data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    t = doc["totals"]
    assert t["count_a"] > t["count_b"] > 0
    assert (t["matched"], t["only_b"], t["only_a"]) == (t["count_b"], 0, t["count_a"] - t["count_b"])
    assert t["precision"] == 1.0 and t["confidence_shift"] == 0.0
    for cls, c in doc["per_class"].items():
        assert c["only_b"] == 0 and c["matched"] == c["count_b"], cls
        if c["matched"]:
            assert (c["mean_iou"], c["confidence_shift"]) == (1.0, 0.0), cls

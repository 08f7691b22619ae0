"""``vidinfer export`` and ``GET /videoinfer/{job_id}/export``: each format read back by the tool its users use,
from results made by real runs.

- A tracked run of the built-in ``coco`` detector and the built-in ``ocr`` over a video of scikit-image
  photos (the astronaut, a sign with text, the cat), through ``vidinfer infer --track``.
- An untracked run of tiny ONNX graphs (tests/onnx_graphs.py) that give a segmentation polygon and 17
  keypoints, through ``vidinfer infer``.
- The API: a tracked job, exported, downloaded with the signed URL; another workspace's job is 404.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from onnx_graphs import anchors_output, constant_model, ultralytics_metadata
from server import Server
from skimage import data
from test_builtin_models import photos_video
from test_ocr import sign_frame
from videos import make_video

from vidinfer.export import COLUMNS, FORMATS, export_bytes
from vidinfer.wire import model_columns

FPS = 2


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vidinfer.cli", *args], capture_output=True, text=True, check=False,
                          timeout=300, cwd=cwd, env={**os.environ, "VIDINFER_DATA_DIR": str(cwd or Path.cwd())})


def photos(path: Path) -> Path:
    frame, _ = sign_frame()
    return photos_video(path, [data.astronaut(), frame, data.chelsea()], size=(640, 360), fps=4)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results of ``vidinfer infer -m coco -m ocr --track``: a person and a mouse, then the sign's lines,
    then a cat, two samples each."""
    tmp = tmp_path_factory.mktemp("export-tracked")
    out = tmp / "photos.results.json"
    done = run_cli("infer", str(photos(tmp / "photos.mp4")), "-m", "coco", "-m", "ocr", "--fps", str(FPS),
                   "--track", "-q", "-o", str(out), cwd=tmp)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results of ``vidinfer infer`` (untracked) with a segmentation graph and a pose graph."""
    tmp = tmp_path_factory.mktemp("export-shapes")
    protos = np.full((1, 32, 160, 160), -1.0, np.float32)
    protos[0, 1:] = 0
    protos[0, 0, 70:85, 70:90] = 1.0
    seg = constant_model(tmp / "seg.onnx", [anchors_output(37, 16, {0: [320, 310, 100, 80, 0.9, 5.0] + [0.0] * 31}),
                                            protos], metadata=ultralytics_metadata("segment", ["blob"]))
    keypoints = np.ravel([[300 + 2 * k, 250 + 3 * k, 0.3 + k / 20] for k in range(17)])
    pose = constant_model(tmp / "pose.onnx", [anchors_output(56, 16, {0: [320, 320, 100, 200, 0.9, *keypoints]})],
                          metadata=ultralytics_metadata("pose", ["person"], kpt_shape=(17, 3)))
    video = make_video(tmp / "v.mp4", frames=20, fps=10, size=(320, 240))
    out = tmp / "shapes.results.json"
    done = run_cli("infer", str(video), "-m", str(seg), "-m", str(pose), "--fps", "5", "-q", "-o", str(out), cwd=tmp)
    assert done.returncode == 0, done.stderr
    return out


def export(results: Path, fmt: str, *args: str) -> Path:
    done = run_cli("export", str(results), "--format", fmt, *args, cwd=results.parent)
    assert done.returncode == 0, done.stderr
    out = Path(args[args.index("-o") + 1]) if "-o" in args else results.with_name(results.stem + FORMATS[fmt])
    assert f"{fmt} -> " in done.stdout and out.is_file()
    return out


def predictions(results: dict, key: str) -> list[tuple[int, dict]]:
    return [(frame, p) for frame, entry in zip(results["frame_offset"], results[key]) if entry
            for p in entry["predictions"]]


def test_help_lists_every_format() -> None:
    done = run_cli("export", "--help")
    assert done.returncode == 0
    for fmt in FORMATS:
        assert fmt in done.stdout


def test_model_columns_are_the_list_valued_keys_but_the_reserved_ones(tracked: Path) -> None:
    results = json.loads(tracked.read_text())
    assert set(results) == {"frame_offset", "time_offset", "video", "coco", "ocr", "tracks"}
    assert model_columns(results) == ["coco", "ocr"]


def test_jsonl_has_one_line_per_sample_and_round_trips(tracked: Path) -> None:
    results = json.loads(tracked.read_text())
    lines = [json.loads(line) for line in export(tracked, "jsonl").read_text().splitlines()]
    assert len(lines) == len(results["frame_offset"]) == 6
    for key in ("frame_offset", "time_offset", "coco", "ocr"):
        assert [line[key] for line in lines] == results[key]


def test_csv_and_parquet_read_by_pandas_and_pyarrow(tracked: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    results = json.loads(tracked.read_text())
    table = pd.read_csv(export(tracked, "csv"))
    parquet = pq.read_table(export(tracked, "parquet")).to_pandas()
    assert tuple(table.columns) == tuple(parquet.columns) == COLUMNS
    expected = [(key, frame, p) for key in ("coco", "ocr") for frame, p in predictions(results, key)]
    assert len(table) == len(parquet) == len(expected) > 0
    for frame in (table, parquet):
        for (_, row), (key, frame_offset, p) in zip(frame.iterrows(), expected):
            assert (row["model"], row["frame"], row["class"], row["class_id"]) == (key, frame_offset, p["class"],
                                                                                   p["class_id"])
            assert [row[k] for k in ("x", "y", "width", "height", "confidence")] == pytest.approx(
                [p[k] for k in ("x", "y", "width", "height", "confidence")])
            assert (None if pd.isna(row["tracker_id"]) else int(row["tracker_id"])) == p["tracker_id"]
            assert (None if pd.isna(row["text"]) else str(row["text"])) == p.get("text")
    assert "EXIT 42 NORTH" in set(parquet["text"].dropna())
    assert {"person", "cat"} <= set(table["class"])


def test_mot_read_by_motmetrics(tracked: Path, shapes: Path, tmp_path: Path) -> None:
    import motmetrics as mm

    results = json.loads(tracked.read_text())
    ambiguous = run_cli("export", str(tracked), "--format", "mot", cwd=tmp_path)
    assert ambiguous.returncode == 2 and "coco, ocr" in ambiguous.stderr and "--model" in ambiguous.stderr
    path = export(tracked, "mot", "--model", "coco", "-o", str(tmp_path / "coco.txt"))
    frame = mm.io.loadtxt(str(path), fmt="mot15-2D")
    tracked_preds = [(f, p) for f, p in predictions(results, "coco") if p["tracker_id"] is not None]
    assert len(frame) == len(tracked_preds) > 0
    for (f, p), ((mot_frame, mot_id), row) in zip(tracked_preds, frame.iterrows()):
        assert (mot_frame, mot_id) == (f + 1, p["tracker_id"])  # MOT frames count from 1
        assert [row["X"], row["Y"], row["Width"], row["Height"]] == pytest.approx(
            [p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["width"], p["height"]], abs=0.06)
        assert row["Confidence"] == pytest.approx(p["confidence"])
    # motmetrics' accumulator takes the frame as read (its iou distance needs numpy < 2: not run here)
    assert list(frame.index.names) == ["FrameId", "Id"]

    untracked = run_cli("export", str(shapes), "--format", "mot", "--model", "seg", cwd=tmp_path)
    assert untracked.returncode == 2 and "--track" in untracked.stderr and "Traceback" not in untracked.stderr


def test_coco_read_by_pycocotools_with_tracks_text_polygons_and_keypoints(tracked: Path, shapes: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = json.loads(tracked.read_text())
    coco = COCO(str(export(tracked, "coco", "--model", "coco", "-o", str(tracked.parent / "c.json"))))
    assert len(coco.getImgIds()) == 6
    expected = predictions(results, "coco")
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == len(expected)
    for ann, (frame, p) in zip(anns, expected):
        image = coco.loadImgs(ann["image_id"])[0]
        assert image["frame_id"] == frame and (image["width"], image["height"]) == (640, 360)
        assert coco.loadCats(ann["category_id"])[0]["name"] == p["class"]
        assert ann["bbox"] == pytest.approx([p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["width"],
                                             p["height"]], abs=0.06)
        assert ann["track_id"] == p["tracker_id"]
    # the predictions scored against themselves: COCO's own evaluation finds every box
    detections = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "bbox", "score")} for a in anns])
    evaluation = COCOeval(coco, detections, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)

    text = COCO(str(export(tracked, "coco", "--model", "ocr")))
    assert "EXIT 42 NORTH" in [a["text"] for a in text.loadAnns(text.getAnnIds())]

    shaped = json.loads(shapes.read_text())
    seg = COCO(str(export(shapes, "coco", "--model", "seg", "-o", str(shapes.parent / "seg.json"))))
    (first, *_) = seg.loadAnns(seg.getAnnIds())
    polygon = shaped["seg"][0]["predictions"][0]["points"]
    assert first["segmentation"][0][:2] == [polygon[0]["x"], polygon[0]["y"]]
    mask = seg.annToMask(first)
    assert mask.shape == (240, 320)
    assert mask.sum() == pytest.approx(first["area"], rel=0.25)  # the rasterised polygon covers its area
    pose = COCO(str(export(shapes, "coco", "--model", "pose", "-o", str(shapes.parent / "pose.json"))))
    (person, *_) = pose.loadAnns(pose.getAnnIds())
    keypoints = shaped["pose"][0]["predictions"][0]["keypoints"]
    assert len(person["keypoints"]) == 3 * 17 and len(pose.loadCats(person["category_id"])[0]["keypoints"]) == 17
    assert person["keypoints"][:2] == [keypoints[0]["x"], keypoints[0]["y"]]
    visible = [k["confidence"] >= 0.5 for k in keypoints]
    assert person["keypoints"][2::3] == [2 if v else 1 for v in visible] and person["num_keypoints"] == sum(visible)


def load_cvat(path: Path) -> tuple[dict, list[dict]]:
    """CVAT for video 1.1 read as CVAT's importer reads it (cvat/apps/dataset_manager/formats/cvat.py,
    ``load``): a track per ``<track label>``, its ``<box>`` shapes with ``frame``, ``outside``, ``keyframe``,
    ``occluded`` (all required attributes) and ``xtl ytl xbr ybr``, keeping keyframes only; plus the task meta."""
    root = ET.parse(path).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    task = root.find("meta/task")
    meta = {"size": int(task.findtext("size")), "mode": task.findtext("mode"),
            "labels": [label.findtext("name") for label in task.findall("labels/label")],
            "original_size": (int(task.findtext("original_size/width")), int(task.findtext("original_size/height")))}
    tracks = []
    for track in root.findall("track"):
        shapes = []
        for box in track:
            assert box.tag == "box"
            shape = {"frame": int(box.attrib["frame"]), "outside": box.attrib["outside"] == "1",
                     "keyframe": box.attrib["keyframe"] == "1", "occluded": box.attrib["occluded"] == "1",
                     "points": [float(box.attrib[k]) for k in ("xtl", "ytl", "xbr", "ybr")]}
            if shape["keyframe"]:
                shapes.append(shape)
        tracks.append({"label": track.attrib["label"], "shapes": shapes})
    return meta, tracks


def test_cvat_video_read_as_cvats_importer_reads_it(tracked: Path, shapes: Path) -> None:
    results = json.loads(tracked.read_text())
    meta, tracks = load_cvat(export(tracked, "cvat", "--model", "coco"))
    assert meta["mode"] == "interpolation" and meta["size"] == results["video"]["frame_count"] == 12
    assert meta["original_size"] == (640, 360)
    assert {t["label"] for t in tracks} <= set(meta["labels"])
    assert len(tracks) == len(results["tracks"]["coco"])  # every box of this run is tracked
    # what CVAT shows on each sample's frame: the track's keyframe there, not outside
    shown = sorted((s["frame"], round(s["points"][0], 1), t["label"]) for t in tracks for s in t["shapes"]
                   if not s["outside"])
    assert shown == sorted((f, round(p["x"] - p["width"] / 2, 1), p["class"]) for f, p in predictions(results, "coco"))
    for track, summary in zip(tracks, results["tracks"]["coco"]):
        frames = [s["frame"] for s in track["shapes"]]
        assert frames == sorted(frames) and frames[0] == summary["first_frame"]
        # it ends at the sample after its last (the next frame after the last sample): outside from there,
        # so CVAT does not carry it on
        last, offsets = track["shapes"][-1], results["frame_offset"]
        after = offsets.index(summary["last_frame"]) + 1
        assert last["outside"] and last["frame"] == (offsets[after] if after < len(offsets) else offsets[-1] + 1)
        assert all(f < meta["size"] for f in frames)

    untracked, = load_cvat(export(shapes, "cvat", "--model", "seg"))[1][:1]
    assert [s["outside"] for s in untracked["shapes"]] == [False, True]  # one box: shown on its frame only


def test_captions_read_by_webvtt_py(tracked: Path) -> None:
    import webvtt

    vtt = webvtt.read(str(export(tracked, "webvtt")))
    srt = webvtt.from_srt(str(export(tracked, "srt")))
    for captions in (vtt, srt):
        cues = [(c.start, c.end, c.text) for c in captions]
        assert [c[:2] for c in cues] == [("00:00:00.000", "00:00:01.000"), ("00:00:01.000", "00:00:02.000"),
                                         ("00:00:02.000", "00:00:03.000")]
        assert "1 person" in cues[0][2] and "coco: " in cues[0][2]
        assert "\u201cEXIT 42 NORTH\u201d" in cues[1][2] and "\u201cPlatform 9\u201d" in cues[1][2]
        assert "1 cat" in cues[2][2]


def test_a_failed_frame_is_skipped_by_every_format(tracked: Path) -> None:
    """A ``null`` entry (that model failed on that frame) gives no rows, boxes or captions, never a crash."""
    results = json.loads(tracked.read_text())
    results["coco"][0] = None
    results["ocr"][2] = None
    for fmt in FORMATS:
        assert export_bytes(results, fmt, "coco" if fmt in ("mot", "coco", "cvat") else None)
    lines = export_bytes(results, "csv").decode().splitlines()
    assert not [line for line in lines if line.startswith("0.0,0,coco,")]
    coco = json.loads(export_bytes(results, "coco", "coco"))
    assert len(coco["images"]) == 6 and {a["image_id"] for a in coco["annotations"]} == {2, 5, 6}
    assert export_bytes(results, "mot", "coco").decode().startswith("3,1,")


def test_bad_inputs_get_clear_errors(tracked: Path, tmp_path: Path) -> None:
    not_results = tmp_path / "x.json"
    not_results.write_text("[1, 2]")
    for args, code_text in ((["--format", "csv", str(not_results)], "not a vidinfer results file"),
                            (["--format", "gif", str(tracked)], "'gif' is not one of"),
                            (["--format", "coco", "--model", "nope", str(tracked)], "no model 'nope'"),
                            (["--format", "csv", "-o", str(tracked), str(tracked)], "the results file itself")):
        done = run_cli("export", *args, cwd=tmp_path)
        assert done.returncode == 2 and code_text in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


# -- the API ---------------------------------------------------------------------------------------------
def test_api_export_is_a_signed_url_to_the_stored_export(tmp_path: Path) -> None:
    with Server(tmp_path / "srv") as server:
        key, other = server.key("acme"), server.key("other")
        url = server.upload(key, photos(tmp_path / "photos.mp4"))
        job = server.submit(key, url, infer_fps=FPS, tracker="bytetrack").json()["job_id"]
        status = server.wait(key, job)
        assert status["status"] == 0, status
        results = httpx.get(status["output_signed_url"]).json()
        base = f"{server.url}/videoinfer/{job}/export"
        for fmt in ("csv", "mot", "webvtt", "coco"):
            answer = httpx.get(base, params={"api_key": key, "format": fmt})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["format"] == fmt and body["job_id"] == job
            download = httpx.get(body["export_signed_url"])
            assert download.status_code == 200 and download.content == export_bytes(results, fmt)
            # stored beside the results, and served from there when asked again (made once per format)
            stored = server.data_dir / "blobs" / urlsplit(body["export_signed_url"]).path.split("/blobs/", 1)[1]
            assert stored.parent == server.data_dir / "blobs" / "results" / "acme"
            assert stored.read_bytes() == download.content
            stored.write_bytes(b"kept")
            again = httpx.get(base, params={"api_key": key, "format": fmt}).json()
            assert httpx.get(again["export_signed_url"]).content == b"kept"
            stored.write_bytes(download.content)
        rows = list(csv.DictReader(io.StringIO(download_text(base, key, "csv"))))
        assert {r["class"] for r in rows} >= {"person", "cat"} and all(r["tracker_id"] for r in rows[:2])
        one = httpx.get(base, params={"api_key": key, "format": "csv", "model": "coco"}).json()
        assert one["model"] == "coco" and one["export_signed_url"] != body["export_signed_url"]

        for params, status_code, code in (
            ({"api_key": other, "format": "csv"}, 404, "job_not_found"),  # another workspace's job
            ({"api_key": key, "format": "gif"}, 400, "invalid_request"),
            ({"api_key": key, "format": "csv", "model": "../../x"}, 400, "unknown_results_key"),
        ):
            answer = httpx.get(base, params=params)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status_code, code), answer.text
        missing = httpx.get(f"{server.url}/videoinfer/nope/export", params={"api_key": key, "format": "csv"})
        assert missing.status_code == 404

        untracked = server.wait(key, server.submit(key, url, infer_fps=1).json()["job_id"])
        answer = httpx.get(f"{server.url}/videoinfer/{untracked['job_id']}/export",
                           params={"api_key": key, "format": "mot"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "not_tracked"), answer.text

        running = server.submit(key, url, infer_fps=FPS).json()["job_id"]
        httpx.delete(f"{server.url}/videoinfer", params={"api_key": key, "job_id": running})
        answer = httpx.get(f"{server.url}/videoinfer/{running}/export", params={"api_key": key, "format": "csv"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "job_not_done"), answer.text


def download_text(base: str, key: str, fmt: str) -> str:
    body = httpx.get(base, params={"api_key": key, "format": fmt}).json()
    return httpx.get(body["export_signed_url"]).text

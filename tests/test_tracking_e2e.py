"""Tracking and counting through the real entry points: ``vidinfer infer --track/--line/--zone``,
``vidinfer summary``, and ``POST /videoinfer`` with ``tracker``/``lines``/``zones`` (the option kept with
the job and applied by the worker). The detector is a tiny ONNX graph whose one box sits still in the
middle of every frame, so the answer is known: one track seen on every sample, inside the zone for the
whole video, crossing no line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from onnx_graphs import channel_mean_classifier, input_size_box_model, ultralytics_metadata
from server import Server
from videos import make_video

SECONDS, FPS = 2, 5


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("track-e2e")
    video = make_video(tmp / "still.mp4", frames=30 * SECONDS, fps=30, size=(320, 240))
    model = input_size_box_model(tmp / "box.onnx", metadata=ultralytics_metadata("detect", ["thing"], end2end=True))
    classifier = channel_mean_classifier(tmp / "mean.onnx")
    return {"video": video, "model": model, "classifier": classifier, "tmp": tmp}


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIDINFER_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "vidinfer.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _check(results: dict, key: str) -> None:
    samples = SECONDS * FPS
    assert len(results["frame_offset"]) == samples
    assert all(p["tracker_id"] == 1 for entry in results[key] for p in entry["predictions"])
    (track,) = results["tracks"][key]
    assert track == {"tracker_id": 1, "class": "thing", "class_id": 0, "first_frame": 0,
                     "last_frame": results["frame_offset"][-1], "first_time": 0.0,
                     "last_time": results["time_offset"][-1], "frames_seen": samples}
    counts = results["counts"][key]
    (line,) = counts["lines"]
    assert (line["total_in"], line["total_out"]) == (0, 0) and line["cumulative_in"] == [0] * samples
    (zone,) = counts["zones"]
    assert zone["present"] == [1] * samples and zone["objects"] == {"thing": 1}
    assert zone["tracks"][0]["dwell_seconds"] == pytest.approx(SECONDS, abs=1 / FPS)


def test_infer_tracks_and_counts_and_summary_prints_them(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = run_cli("infer", str(files["video"]), "-m", str(files["model"]), "--fps", str(FPS), "-q",
                   "--line", "0,10,320,10:margin=5,samples=1", "--zone", "0,0,320,0,320,240,0,240", "-o", str(out),
                   data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 tracks; line 1 in 0 out 0" in done.stdout
    results = json.loads(out.read_text())
    _check(results, "box")
    assert {k: results["counts"]["box"]["lines"][0][k] for k in ("margin", "samples")} == {"margin": 5, "samples": 1}
    from vidinfer.results_schema import results_schema

    jsonschema.validate(results, results_schema())

    png = tmp_path / "chart.png"
    summary = run_cli("summary", str(out), "--png", str(png), data_dir=tmp_path)
    assert summary.returncode == 0, summary.stderr
    for text in ("box", "thing", "line 1", "zone 1", "0:00", "2.0 s"):
        assert text in summary.stdout, summary.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    plain = run_cli("infer", str(files["video"]), "-m", str(files["model"]), "--fps", str(FPS), "-q",
                    "-o", str(tmp_path / "plain.json"), data_dir=tmp_path)
    assert plain.returncode == 0, plain.stderr
    untracked = json.loads((tmp_path / "plain.json").read_text())
    assert "tracks" not in untracked and "tracker_id" not in untracked["box"][0]["predictions"][0]
    bad = run_cli("infer", str(files["video"]), "-m", str(files["model"]), "--line", "1,2,3", data_dir=tmp_path)
    assert bad.returncode == 2 and "pairs" in bad.stderr
    bad = run_cli("infer", str(files["video"]), "-m", str(files["model"]), "--line", "1,2,3,4:margin=-3",
                  data_dir=tmp_path)
    assert bad.returncode == 2 and "margin" in bad.stderr


def test_summary_refuses_what_is_not_results(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    done = run_cli("summary", str(junk), data_dir=tmp_path)
    assert done.returncode == 2 and "not a vidinfer results file" in done.stderr


@pytest.fixture(scope="module")
def server(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("track-svc")
    added = run_cli("models", "add", "box", str(files["model"]), data_dir=data)
    assert added.returncode == 0, added.stderr
    added = run_cli("models", "add", "mean", str(files["classifier"]), data_dir=data)
    assert added.returncode == 0, added.stderr
    with Server(data, workers=1) as srv:
        yield srv


def test_a_job_with_a_tracker_lines_and_zones(server: Server, files: dict[str, Path]) -> None:
    key = server.key("acme")
    url = server.upload(key, files["video"])
    models = [{"model_id": "box", "model_version": "1"}]
    response = server.submit(key, url, models, infer_fps=FPS, tracker="bytetrack",
                             lines=[{"points": [[0, 10], [320, 10]], "margin": "10%", "samples": 3}],
                             zones=[[0, 0, 320, 0, 320, 240, 0, 240]])
    assert response.status_code == 200, response.text
    status = server.wait(key, response.json()["job_id"])
    assert status["status"] == 0, status
    results = httpx.get(status["output_signed_url"]).json()
    _check(results, "box")
    assert {k: results["counts"]["box"]["lines"][0][k] for k in ("margin", "samples")} == {"margin": "10%",
                                                                                          "samples": 3}
    jsonschema.validate(results, httpx.get(f"{server.url}/results.schema.json").json())
    assert results["video"] == {"width": 320, "height": 240, "frame_count": 30 * SECONDS,
                                "duration": float(SECONDS), "fps": 30.0}

    plain = server.wait(key, server.submit(key, url, models, infer_fps=FPS).json()["job_id"])
    assert "tracks" not in httpx.get(plain["output_signed_url"]).json()

    bad = server.submit(key, url, models, infer_fps=FPS, lines=[[[0, 0], [0, 0]]])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_lines"
    bad = server.submit(key, url, models, infer_fps=FPS, lines=[{"points": [[0, 0], [9, 9]], "margin": "wide"}])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_lines", bad.text
    assert "margin" in bad.json()["error"]["message"]
    bad = server.submit(key, url, models, infer_fps=FPS, tracker="deepsort")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_tracker"
    # a line with no model that finds boxes: refused at submit (the model's task is known), nothing queued
    only_classes = [{"model_id": "mean", "model_version": "1"}]
    def jobs() -> int:
        return len(httpx.get(f"{server.url}/videoinfers", params={"api_key": key}).json()["jobs"])

    before = jobs()
    bad = server.submit(key, url, only_classes, infer_fps=FPS, lines=[[[0, 10], [320, 10]]])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "no_detection_model", bad.text
    assert "mean (classification)" in bad.json()["error"]["message"]
    assert jobs() == before


def test_findings_say_what_every_kind_of_model_found() -> None:
    """The closing line of ``infer`` and ``vidinfer summary`` for entries serialised by the wire writer."""
    import numpy as np
    from rich.console import Console

    from vidinfer.core.results import (
        Classification,
        Detections,
        Embedding,
        FramePrediction,
        Gazes,
        TextLines,
        VideoResult,
    )
    from vidinfer.summary import findings, print_summary
    from vidinfer.wire import results_to_json

    box = [[10, 10, 50, 50]]
    kinds = {
        "cls": Classification(["cat", "dog"], np.array([0.8, 0.2])),
        "tags": Classification(["cat", "dog"], np.array([0.8, 0.7]), multilabel=True),
        "gaze": Gazes(box, [0.9], np.zeros((1, 6, 2)), [0.1], [0.0]),
        "ocr": TextLines(np.array([[[0, 0], [40, 0], [40, 10], [0, 10]]]), ["EXIT"], [0.9]),
        "clip": Embedding(np.ones((1, 4))),
        "pose": Detections(box, [0.9], [0], ["person"], keypoints=np.ones((1, 17, 3))),
        "det": Detections(box, [0.9], [0], ["car"]),
        "empty": Detections.empty(),
    }
    result = VideoResult(frame_offset=[0, 5], time_offset=[0.0, 0.2],
                         predictions={k: [FramePrediction(v, (64, 48), 0.01)] * 2 for k, v in kinds.items()})
    results = results_to_json(result)
    lines = {f.key: f.line() for f in findings(results)}
    assert lines == {"cls": "cls: top classes cat 2", "tags": "tags: predicted classes cat 2, dog 2",
                     "gaze": "gaze: 2 faces", "ocr": 'ocr: 2 text lines ("EXIT" 2)', "clip": "clip: 2 embeddings",
                     "pose": "pose: 2 poses (person 2)", "det": "det: car 2", "empty": "empty: nothing found"}
    console = Console(record=True, width=200)
    print_summary(results, console)
    text = console.export_text()
    for line in lines.values():
        if not line.startswith(("det", "pose", "ocr")):  # these three get their class tables
            assert line in text, text
    assert "car" in text and "person" in text and "no detections" not in text

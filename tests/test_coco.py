"""The built-in COCO detector finds what a person would see in real photos."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from vidinfer.demo import FPS, SECONDS_PER_SCENE, build_demo_video
from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    video = build_demo_video(tmp_path_factory.mktemp("coco") / "demo.mp4")
    runs = resolve_runs(ModelRegistry(), [ModelRequest("coco", "coco", {"confidence": 0.5})])
    return run_inference(str(video), runs, Fraction(2)).results_json


def _scene_classes(results: dict, scene: int) -> Counter[str]:
    lo, hi = scene * FPS * SECONDS_PER_SCENE, (scene + 1) * FPS * SECONDS_PER_SCENE
    counts: Counter[str] = Counter()
    for offset, entry in zip(results["frame_offset"], results["coco"]):
        if lo <= offset < hi:
            counts.update(p["class"] for p in entry["predictions"])
    return counts


@pytest.mark.parametrize(("scene", "expected"), [(0, "person"), (1, "cat"), (2, "cup"), (3, "motorcycle")])
def test_finds_the_obvious_object_in_every_frame_of_its_scene(demo_results: dict, scene: int, expected: str) -> None:
    frames_in_scene = 2 * SECONDS_PER_SCENE  # infer_fps 2
    assert _scene_classes(demo_results, scene)[expected] >= frames_in_scene


def test_the_astronaut_box_covers_the_person(demo_results: dict) -> None:
    entry = demo_results["coco"][0]
    person = max((p for p in entry["predictions"] if p["class"] == "person"), key=lambda p: p["confidence"])
    # the astronaut fills most of the letterboxed 640x360 frame's height, left of centre
    assert entry["image"] == {"width": 640, "height": 360}
    assert person["height"] > 250
    assert 100 < person["x"] < 400
    assert person["class_id"] == 0
    assert len(person["detection_id"]) == 36


def test_class_filter_and_confidence_are_applied(tmp_path: Path) -> None:
    video = build_demo_video(tmp_path / "demo.mp4")
    runs = resolve_runs(ModelRegistry(), [ModelRequest("coco", "coco", {"classes": ["cat"], "confidence": 0.6})])
    results = run_inference(str(video), runs, Fraction(1)).results_json
    classes = {p["class"] for e in results["coco"] for p in e["predictions"]}
    confidences = [p["confidence"] for e in results["coco"] for p in e["predictions"]]
    assert classes == {"cat"}
    assert min(confidences) >= 0.6

"""The built-in ``ocr`` reads a rendered sign exactly, in source pixels, through a real video."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from test_builtin_models import infer_image, photos_video
from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.ocr import ocr_size
from vidinfer.models.registry import ModelRegistry

FONT = cv2.FONT_HERSHEY_SIMPLEX
#: (text, font scale, thickness, bottom-left corner): a sign's big lines and a small line under it
LINES = [
    ("EXIT 42 NORTH", 1.2, 3, (60, 90)),
    ("Platform 9", 0.9, 2, (60, 150)),
    ("Open daily 6-23", 0.4, 1, (60, 200)),  # cap height 11 px in the 640x360 frame
]


@pytest.fixture(scope="module")
def ocr():  # noqa: ANN201
    return ModelRegistry().load("ocr")


def sign_frame() -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
    """A 640x360 street-ish frame with a white sign; the drawn text and its box (x1, y1, x2, y2)."""
    frame = np.full((360, 640, 3), (70, 90, 60), dtype=np.uint8)
    cv2.rectangle(frame, (40, 40), (400, 225), (245, 245, 240), -1)
    drawn = []
    for text, scale, thickness, (x, y) in LINES:
        (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
        cv2.putText(frame, text, (x, y), FONT, scale, (20, 30, 120), thickness, cv2.LINE_AA)
        drawn.append((text, (x, y - height, x + width, y + baseline)))
    return frame, drawn


def _box(pred: dict) -> tuple[float, float, float, float]:
    return (pred["x"] - pred["width"] / 2, pred["y"] - pred["height"] / 2,
            pred["x"] + pred["width"] / 2, pred["y"] + pred["height"] / 2)


def assert_reads_sign(entry: dict, drawn: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    preds = entry["predictions"]
    assert [p["text"] for p in preds] == [text for text, _ in drawn]  # exact, in reading order
    for pred, (_, (x1, y1, x2, y2)) in zip(preds, drawn):
        assert pred["class"] == "text" and pred["class_id"] == 0 and pred["confidence"] > 0.8
        bx1, by1, bx2, by2 = _box(pred)
        height = y2 - y1
        # the box hugs the drawn text: within about half a line height on every side
        assert abs(bx1 - x1) < max(8, height * 0.6) and abs(bx2 - x2) < max(8, height * 0.6), (pred, x1, x2)
        assert abs(by1 - y1) < max(6, height * 0.6) and abs(by2 - y2) < max(6, height * 0.6), (pred, y1, y2)
        assert len(pred["points"]) == 4
        xs, ys = [p["x"] for p in pred["points"]], [p["y"] for p in pred["points"]]
        assert min(xs) == pytest.approx(bx1, abs=0.2) and max(ys) == pytest.approx(by2, abs=0.2)


def test_ocr_reads_a_rendered_sign_in_a_video(ocr, tmp_path: Path) -> None:  # noqa: ANN001
    frame, drawn = sign_frame()
    video = photos_video(tmp_path / "sign.mp4", [frame], size=(640, 360), fps=2)
    runs = resolve_runs(ModelRegistry(), [ModelRequest("ocr", "ocr")])
    results = run_inference(str(video), runs, Fraction(1)).results_json
    assert results["time_offset"] == [0.0]
    (entry,) = results["ocr"]
    assert set(entry) == {"time", "image", "predictions"}
    assert entry["image"] == {"width": 640, "height": 360}
    assert_reads_sign(entry, drawn)
    first = entry["predictions"][0]
    assert set(first) == {"x", "y", "width", "height", "confidence", "class", "class_id", "detection_id",
                          "text", "points"}


def test_ocr_confidence_and_max_detections(ocr) -> None:  # noqa: ANN001
    frame, drawn = sign_frame()
    out = infer_image(ocr, frame, max_detections=1)
    assert [p["text"] for p in out["predictions"]] == [drawn[0][0]]
    assert infer_image(ocr, frame, confidence=1.0)["predictions"] == []


def test_ocr_finds_no_text_on_the_astronaut(ocr) -> None:  # noqa: ANN001
    # (PP-OCR does read a single "8" into the coffee cup seen from above: shapes like digits are digits to it)
    assert infer_image(ocr, data.astronaut())["predictions"] == []


@pytest.mark.parametrize(("source", "expected"), [
    ((640, 360), (1308, 736)),  # small frames: upscaled so the detector sees small text
    ((320, 240), (981, 736)),
    ((1280, 720), (1308, 736)),
    ((1920, 1080), (1920, 1080)),  # large enough: read as it is
    ((3840, 2160), (2000, 1125)),  # capped like RapidOCR's own max_side_len
    ((100, 40), (400, 160)),  # at most 4x
])
def test_ocr_reading_size(source: tuple[int, int], expected: tuple[int, int]) -> None:
    assert ocr_size(source) == expected


def test_ocr_states_its_licence_and_source(ocr) -> None:  # noqa: ANN001
    assert ocr.info.task == "ocr" and ocr.info.classes == ("text",)
    assert "Apache-2.0" in ocr.info.license and "PyPI rapidocr" in ocr.info.source

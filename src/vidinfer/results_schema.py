"""The JSON Schema of the results file, published at ``/results.schema.json``.

Written as pydantic models so the schema and its documentation live in one place;
``tests/test_results_schema.py`` validates real results files against it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Point(_Open):
    x: float
    y: float


class Keypoint(Point):
    confidence: float
    class_id: int
    class_: str = Field(alias="class")


class ImageSize(_Open):
    width: int = Field(description="source frame width in pixels")
    height: int


class Box(_Open):
    x: float = Field(description="box centre, source pixels")
    y: float
    width: float
    height: float
    confidence: float
    class_: str = Field(alias="class")
    class_id: int


class Detection(Box):
    detection_id: str
    points: list[Point] | None = Field(None, description="instance-segmentation polygon; OCR line quadrilateral")
    keypoints: list[Keypoint] | None = Field(None, description="keypoint-detection")
    text: str | None = Field(None, description="OCR: the line's text")


class DetectionEntry(_Open):
    """object-detection, instance-segmentation, keypoint-detection, ocr."""

    time: float = Field(description="seconds the model spent on this frame")
    image: ImageSize
    predictions: list[Detection]


class ClassScore(_Open):
    class_: str = Field(alias="class")
    class_id: int
    confidence: float


class Confidence(_Open):
    confidence: float


class ClassificationEntry(_Open):
    """classification: single-label (a list, ``top``, ``confidence``) or multi-label (a dict)."""

    time: float
    image: ImageSize
    predictions: list[ClassScore] | dict[str, Confidence]
    top: str | None = None
    confidence: float | None = None
    predicted_classes: list[str] | None = None


class Face(Box):
    landmarks: list[Point]


class Gaze(_Open):
    face: Face
    yaw: float = Field(description="radians")
    pitch: float = Field(description="radians")


class GazeEntry(_Open):
    """gaze-detection."""

    time: float
    image: ImageSize
    predictions: list[Gaze]


class EmbeddingEntry(_Open):
    """clip-embed-image."""

    time: float
    embeddings: list[list[float]]


Entry = DetectionEntry | ClassificationEntry | GazeEntry | EmbeddingEntry


def results_schema() -> dict[str, Any]:
    """The schema of a whole results file: two offset lists and one list per model key."""
    entry = TypeAdapter(Entry | None).json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = entry.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "vidinfer results",
        "description": "One entry per sampled frame in every list; a model's entry is null where inference "
                       "failed on that frame.",
        "type": "object",
        "required": ["frame_offset", "time_offset"],
        "properties": {
            "frame_offset": {"type": "array", "items": {"type": "integer", "minimum": 0},
                             "description": "index of the sampled frame in display order, from 0"},
            "time_offset": {"type": "array", "items": {"type": "number", "minimum": 0},
                            "description": "presentation time of the sampled frame in seconds (4 decimals)"},
        },
        "additionalProperties": {"type": "array", "items": entry, "description": "one model's entries"},
        "$defs": defs,
    }

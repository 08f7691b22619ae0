"""The JSON Schema of the results file, published at ``/results.schema.json``.

Written as pydantic models so the schema and its documentation live in one place;
``tests/test_service.py`` and ``tests/test_tracking_e2e.py`` validate real results files
against it.
"""

from __future__ import annotations

from typing import Any, Literal

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
    tracker_id: int | None = Field(None, description="with tracking: the track (from 1) this detection belongs to; "
                                                     "null for a detection no track claimed")
    points: list[Point] | None = Field(None, description="instance-segmentation polygon; OCR line quadrilateral")
    keypoints: list[Keypoint] | None = Field(None, description="keypoint-detection")
    text: str | None = Field(None, description="OCR: the line's text")


class _Entry(_Open):
    reused_from: int | None = Field(
        None, ge=0, description="with skip_static: this frame was not inferred (it barely differed from the last "
                                "inferred one); the predictions are those of the sample at this index in the "
                                "lists, and time is 0")


class DetectionEntry(_Entry):
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


class ClassificationEntry(_Entry):
    """classification: single-label (a list, ``top``, ``confidence``) or multi-label (a dict)."""

    time: float
    image: ImageSize
    predictions: list[ClassScore] | dict[str, Confidence]
    top: str | None = None
    confidence: float | None = None
    predicted_classes: list[str] | None = None


class Face(Box):
    landmarks: list[Point]
    class_confidence: float | None = Field(None, description="null, as hosted: the face detector has one score")
    tracker_id: int | None = Field(None, description="present when the job tracks faces")


class Gaze(_Open):
    face: Face
    yaw: float = Field(description="radians, where the eyes look (the head where they cannot be seen); "
                                   "> 0: towards the image's left")
    pitch: float = Field(description="radians, > 0: up")
    head_yaw: float | None = Field(None, description="radians, where the head points (vidinfer's addition)")
    head_pitch: float | None = Field(None, description="radians (vidinfer's addition)")
    gaze_source: Literal["eyes", "head"] | None = Field(
        None, description="whether yaw/pitch include the irises (vidinfer's addition)")


class GazeEntry(_Entry):
    """gaze-detection."""

    time: float
    image: ImageSize
    predictions: list[Gaze]
    time_face_det: float | None = Field(None, description="seconds finding faces in this frame")
    time_gaze_det: float | None = Field(None, description="seconds on landmarks, head pose and irises")


class EmbeddingEntry(_Entry):
    """clip-embed-image."""

    time: float
    embeddings: list[list[float]]


Entry = DetectionEntry | ClassificationEntry | GazeEntry | EmbeddingEntry


class Track(_Open):
    """One track's summary (``tracks``)."""

    tracker_id: int
    class_: str = Field(alias="class", description="the class most of its detections have")
    class_id: int
    first_frame: int = Field(description="frame_offset of the first sample it was detected in")
    last_frame: int
    first_time: float = Field(description="time_offset of that sample, seconds")
    last_time: float
    frames_seen: int = Field(description="samples it was detected in")


class Crossing(_Open):
    tracker_id: int
    class_: str = Field(alias="class")
    direction: str = Field(description="in or out")
    frame_offset: int = Field(description="the first sample seen clearly (past the margin) on the new side")
    time_offset: float


class LineCounts(_Open):
    name: str
    points: list[list[float]] = Field(description="[[x1, y1], [x2, y2]], source pixels")
    margin: float | str | None = Field(None, description="how far past the line a box centre counts: pixels, or "
                                                         "a percentage of the box's extent across the line ('25%')")
    samples: int | None = Field(None, description="samples in a row past the margin that make a crossing")
    in_: dict[str, int] = Field(alias="in", description="crossings to the line's left-hand side (walking from its "
                                                       "first point to its second), per class")
    out: dict[str, int] = Field(description="crossings to its right-hand side, per class")
    total_in: int
    total_out: int
    crossings: list[Crossing]
    cumulative_in: list[int] = Field(description="crossings in so far, one per sample")
    cumulative_out: list[int]


class ZoneTrack(_Open):
    tracker_id: int
    class_: str = Field(alias="class")
    first_time: float = Field(description="first sample inside, seconds")
    last_time: float
    visits: int = Field(description="separate runs of samples inside")
    dwell_seconds: float


class ZoneCounts(_Open):
    name: str
    points: list[list[float]] = Field(description="the polygon, source pixels")
    objects: dict[str, int] = Field(description="tracks that were inside, per class")
    total_objects: int
    dwell_seconds: dict[str, float] = Field(description="time spent inside, summed over tracks, per class")
    max_present: int
    present: list[int] = Field(description="tracked objects inside, one per sample")
    tracks: list[ZoneTrack]


class VideoMeta(_Open):
    """The source video, as vidinfer probed it (the ``video`` key)."""

    width: int = Field(description="frame width in pixels")
    height: int = Field(description="frame height in pixels")
    frame_count: int = Field(description="frames in the whole video")
    duration: float = Field(description="seconds, the whole video")
    fps: float = Field(description="average frame rate")


class ModelCounts(_Open):
    lines: list[LineCounts]
    zones: list[ZoneCounts]


def results_schema() -> dict[str, Any]:
    """The schema of a whole results file: two offset lists and one list per model key."""
    entry = TypeAdapter(Entry | None).json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = entry.pop("$defs", {})
    tracks = TypeAdapter(dict[str, list[Track]]).json_schema(by_alias=True, ref_template="#/$defs/{model}")
    counts = TypeAdapter(dict[str, ModelCounts]).json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs.update(tracks.pop("$defs", {}))
    defs.update(counts.pop("$defs", {}))
    video = TypeAdapter(VideoMeta).json_schema(by_alias=True)
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
            "video": {**video, "description": "vidinfer's extension: the video the results were made from, so "
                                              "a render can refuse another one (absent from older files)"},
            "tracks": {**tracks, "description": "with tracking: per model key, one summary per track"},
            "counts": {**counts, "description": "with lines or zones: per model key, line crossings and zone "
                                                "occupancy"},
        },
        "additionalProperties": {"type": "array", "items": entry, "description": "one model's entries"},
        "$defs": defs,
    }

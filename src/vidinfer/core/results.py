"""Prediction types and the per-video result.

Predictions are struct-of-arrays (like supervision's ``Detections``): one NumPy
array per field, validated once. Coordinates are always in source-frame pixels.
``vidinfer.wire`` turns these into the Roboflow-compatible JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Detections:
    """Boxes (``xyxy``, source pixels) with scores and classes; optional masks / keypoints."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_name: list[str]
    #: instance segmentation: one (M, 2) polygon per detection, source pixels
    polygons: list[np.ndarray] | None = None
    #: pose: (N, K, 3) = x, y, confidence per keypoint
    keypoints: np.ndarray | None = None
    keypoint_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(n)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(n)
        if len(self.class_name) != n:
            raise ValueError(f"class_name has {len(self.class_name)} entries for {n} boxes")
        if self.polygons is not None and len(self.polygons) != n:
            raise ValueError(f"polygons has {len(self.polygons)} entries for {n} boxes")
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
            if self.keypoints.ndim != 3 or len(self.keypoints) != n or self.keypoints.shape[2] != 3:
                raise ValueError(f"keypoints must be (N, K, 3), got {self.keypoints.shape}")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), [])


@dataclass
class Classification:
    """Scores for every class of a classifier; ``multilabel`` picks the wire shape."""

    class_names: list[str]
    confidence: np.ndarray
    multilabel: bool = False
    #: multi-label: classes scoring at least this are "predicted"
    threshold: float = 0.5
    #: single-label: list only the best ``top_k`` classes (a 1000-class model would bloat every entry)
    top_k: int | None = None

    def __post_init__(self) -> None:
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        if len(self.confidence) != len(self.class_names):
            raise ValueError(f"{len(self.confidence)} scores for {len(self.class_names)} classes")


@dataclass
class Embedding:
    """Image embedding(s) of a frame, e.g. CLIP: (n, D) float32."""

    vectors: np.ndarray
    #: zero-shot scores over the user's prompts (CLIP with ``inference_params.prompts``)
    classification: Classification | None = None

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim == 1:
            self.vectors = self.vectors[None, :]


@dataclass
class Gazes:
    """Faces with where each looks (gaze-detection); source pixels, angles in radians."""

    xyxy: np.ndarray
    confidence: np.ndarray
    #: (N, 6, 2): right eye, left eye, nose tip, mouth, right ear, left ear (the person's own sides)
    landmarks: np.ndarray
    #: where the eyes look (the head's direction where they cannot be seen);
    #: > 0: towards the image's left; 0: at the camera
    yaw: np.ndarray
    #: > 0: looking up
    pitch: np.ndarray
    #: where the head points, same convention (``yaw`` minus the eyes' turn within the head)
    head_yaw: np.ndarray | None = None
    head_pitch: np.ndarray | None = None
    #: per face: "eyes" when yaw/pitch include the irises, "head" when they are the head's alone
    gaze_source: list[str] | None = None
    #: seconds this frame spent finding faces, and on landmarks, head pose and irises
    time_face_det: float | None = None
    time_gaze_det: float | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(n)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(n, 6, 2)
        self.yaw = np.asarray(self.yaw, dtype=np.float32).reshape(n)
        self.pitch = np.asarray(self.pitch, dtype=np.float32).reshape(n)
        self.head_yaw = self.yaw.copy() if self.head_yaw is None else np.asarray(self.head_yaw, np.float32).reshape(n)
        self.head_pitch = (self.pitch.copy() if self.head_pitch is None
                           else np.asarray(self.head_pitch, np.float32).reshape(n))
        if self.gaze_source is None:
            self.gaze_source = ["head"] * n
        if len(self.gaze_source) != n or not set(self.gaze_source) <= {"eyes", "head"}:
            raise ValueError(f"gaze_source must be 'eyes' or 'head' for each of {n} faces")

    def __len__(self) -> int:
        return len(self.xyxy)


@dataclass
class TextLines:
    """Lines of text read in a frame (OCR): a quadrilateral, the text and its confidence each."""

    #: (N, 4, 2) corners in source pixels, clockwise from the top-left of the text
    points: np.ndarray
    text: list[str]
    confidence: np.ndarray

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 4, 2)
        n = len(self.points)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(n)
        if len(self.text) != n:
            raise ValueError(f"text has {len(self.text)} entries for {n} lines")

    def __len__(self) -> int:
        return len(self.points)


Prediction = Detections | Classification | Embedding | Gazes | TextLines


@dataclass
class FramePrediction:
    """One model's output on one sampled frame."""

    value: Prediction
    image_size: tuple[int, int]  # source (width, height)
    inference_time: float  # seconds spent in the model for this frame (batch share)
    #: ``skip_static``: the sample index whose predictions these are (this frame was not inferred)
    reused_from: int | None = None


@dataclass
class VideoResult:
    """Everything one job produced: parallel lists, one entry per sample."""

    frame_offset: list[int] = field(default_factory=list)
    time_offset: list[float] = field(default_factory=list)
    #: model key -> one entry per sample; None where that frame's inference failed
    predictions: dict[str, list[FramePrediction | None]] = field(default_factory=dict)
    #: things a user should know: lost frames, failed frames
    warnings: list[str] = field(default_factory=list)
    failed_frames: int = 0
    #: True when part of the video could not be decoded
    partial: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_offset)

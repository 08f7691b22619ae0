"""The contract between the pipeline and the models it runs: ``Model``, ``ModelInfo``, ``InferenceParams``.

The pipeline owns what it calls, so the contract lives in ``core`` and the
adapters in ``vidinfer.models`` implement it; ``core`` imports nothing above it.
The pipeline converts each sampled frame once, straight to the RGB size the
model asks for (``image_size``), and hands batches of those images to
``predict``, ``PARALLEL_BATCHES`` at a time; the adapter returns predictions in
*source* pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vidinfer.core.results import Prediction
from vidinfer.errors import InvalidInput

#: batches the pipeline has in ``predict`` at once, each in a thread of its own (adapters are
#: thread-safe). Two independent runs keep the cores busy through each other's serial parts and
#: post-processing, and never wait on one another the way one run's threads do when the decoder
#: preempts one of them: on 2 cores, two one-thread ONNX Runtime runs beat one two-thread run in 8
#: of 9 paired rounds, by 17-22% alone and 4-26% beside the decoder (bench/README.md).
PARALLEL_BATCHES = 2


def session_threads(threads: int = 0) -> int:
    """Intra-op threads for one ONNX Runtime run: ``threads``, or the cores shared among the parallel batches."""
    return threads or max(1, (os.cpu_count() or 1) // PARALLEL_BATCHES)


#: the hosted API's inference_type names
TASKS = (
    "object-detection",
    "instance-segmentation",
    "classification",
    "keypoint-detection",
    "clip-embed-image",
    "gaze-detection",
    "ocr",
)


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, for ``vidinfer models list`` and for validating requests."""

    name: str
    task: str
    classes: tuple[str, ...]
    input_size: tuple[int, int] | None  # (width, height) the network runs at
    source: str  # a file path or the package the weights come from
    license: str = "unknown"
    description: str = ""
    #: inference_params keys this model accepts beyond the common ones
    extra_params: tuple[str, ...] = ()


@dataclass(frozen=True)
class InferenceParams:
    """Per-model ``inference_params``; defaults are the server-side defaults."""

    confidence: float = 0.4
    iou: float = 0.5
    max_detections: int = 300
    classes: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _ALIASES = {"overlap": "iou", "iou_threshold": "iou", "confidence_threshold": "confidence"}

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, info: ModelInfo | None = None) -> InferenceParams:
        """Validate user-given params; unknown keys and out-of-range values are refused."""
        raw = dict(raw or {})
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        allowed_extra = set(info.extra_params) if info else set()
        for key, value in raw.items():
            name = cls._ALIASES.get(key, key)
            if name in ("confidence", "iou"):
                values[name] = _fraction_param(key, value)
            elif name == "max_detections":
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
                    raise InvalidInput(f"max_detections must be an integer from 1 to 10000, got {value!r}",
                                       code="invalid_inference_params")
                values[name] = value
            elif name == "classes":
                if isinstance(value, str):
                    value = [c.strip() for c in value.split(",") if c.strip()]
                if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                    raise InvalidInput("classes must be a list of class names", code="invalid_inference_params")
                if info and info.classes:
                    unknown = sorted(set(value) - set(info.classes))
                    if unknown:
                        raise InvalidInput(f"model {info.name} has no class {', '.join(unknown)}",
                                           code="invalid_inference_params")
                values[name] = tuple(value)
            elif name in allowed_extra:
                extra[name] = value
            else:
                known = sorted({"confidence", "iou", "overlap", "max_detections", "classes", *allowed_extra})
                raise InvalidInput(f"unknown inference_params key {key!r}; known: {', '.join(known)}",
                                   code="invalid_inference_params")
        return cls(**values, extra=extra)


def _fraction_param(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(f"{key} must be a number from 0 to 1, got {value!r}", code="invalid_inference_params")
    return float(value)


@runtime_checkable
class Model(Protocol):
    """A loaded model, ready to run on batches of frames."""

    info: ModelInfo

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) RGB image wanted for a frame of ``source_size``."""
        ...

    def predict(
        self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams
    ) -> list[Prediction]:
        """Run on RGB uint8 images of ``image_size``; return one prediction per image, in source pixels."""
        ...

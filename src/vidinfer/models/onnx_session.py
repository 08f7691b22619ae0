"""Opening ONNX Runtime sessions the same way for every ONNX model (user exports, CLIP's encoders).

This module is the only importer of ``onnxruntime`` in vidinfer (an import-linter contract in
``tests/test_imports.py`` holds it so): one place chooses the execution providers, sets the threads
and turns a file ONNX Runtime cannot read into a ``ModelError``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from vidinfer.core.model import session_threads
from vidinfer.errors import ModelError

log = logging.getLogger(__name__)

#: an open ONNX Runtime session, for the adapters' type hints
Session = ort.InferenceSession


def choose_providers(wanted: Sequence[str]) -> list[str]:
    """The asked providers that exist here, else CUDA when present, then CPU."""
    available = ort.get_available_providers()
    chosen = [p for p in wanted if p in available]
    if wanted and not chosen:
        log.warning("none of the ONNX Runtime providers %s is available here (have %s); using the default",
                    list(wanted), available)
    if not chosen:
        chosen = [p for p in ("CUDAExecutionProvider",) if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def open_session(path: Path, threads: int = 0, providers: Sequence[str] = ()) -> Session:
    """Full graph optimisation, no spin-waiting (frees a core for decoding), and a share of the cores:
    the pipeline runs ``PARALLEL_BATCHES`` batches through the session at once (``session_threads``)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = session_threads(threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=choose_providers(providers))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unexported classes
        raise ModelError(f"{path} is not a readable ONNX model: {str(exc).strip()[:300]}",
                         code="invalid_model_file") from exc


def describe(session: Session) -> str:
    """The inputs' and outputs' names and shapes, for error messages a user can act on."""
    ins = ", ".join(f"{i.name} {list(i.shape)}" for i in session.get_inputs())
    outs = ", ".join(f"{o.name} {list(o.shape)}" for o in session.get_outputs())
    return f"inputs: {ins or 'none'}; outputs: {outs or 'none'}"

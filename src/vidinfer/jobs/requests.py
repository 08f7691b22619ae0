"""What a job asks for: model requests by ``model_id``/``model_version``, and its input.

Shared by the API (to refuse a bad request at once) and the workers (to run it),
so both read a request the same way.
"""

from __future__ import annotations

import re
from typing import Any

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.errors import InvalidInput, ModelError, NotFound
from vidinfer.models.registry import BUILTINS, ModelRegistry

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: the version looked up for a request that names none
DEFAULT_VERSION = "1"


def model_spec(names: set[str], builtins: set[str], workspace: str, model_id: str, model_version: str | None) -> str:
    """The registry name a request's model resolves to.

    Looked up, in order: ``WORKSPACE/MODEL_ID/VERSION`` (version 1 when the request gives none) and
    ``WORKSPACE/MODEL_ID`` (registered with ``vidinfer models add``), then a built-in or a globally
    registered ``MODEL_ID``. Never a file path: a request cannot make the server open a file of its
    choosing. An unknown model is reported as the request named it, with no version it did not give.
    """
    version = model_version or DEFAULT_VERSION
    if not _ID.match(model_id) or not _ID.match(version):
        named = model_id[:130] if model_version is None else f"{model_id[:130]}/{model_version[:130]}"
        raise InvalidInput(f"invalid model_id/model_version {named!r}: use letters, digits, '.', '_' and '-'",
                           code="invalid_model")
    for candidate in (f"{workspace}/{model_id}/{version}", f"{workspace}/{model_id}", model_id):
        if candidate in names or candidate in builtins:
            return candidate
    named = model_id if model_version is None else f"{model_id}/{model_version}"
    raise ModelError(
        f"unknown model {named} in workspace {workspace!r}; register it with "
        f"`vidinfer models add {workspace}/{named} MODEL.onnx` (built-ins: "
        f"{', '.join(sorted(builtins))})",
        code="unknown_model",
    )


def upload_prefix(workspace: str) -> str:
    return f"uploads/{workspace}/"


def check_own_upload(key: str, workspace: str) -> str:
    """An uploaded object may only be used by its own workspace; others get 'not found'."""
    if not key.startswith(upload_prefix(workspace)):
        raise NotFound("no such uploaded video in this workspace", code="upload_not_found")
    return key


def model_requests(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalise the request's models: ``model_version`` as a string (None when not given), params as a dict."""
    out = []
    for m in models:
        version = m.get("model_version")
        out.append({
            "model_id": str(m["model_id"]),
            "model_version": None if version is None or version == "" else str(version),
            "inference_type": m.get("inference_type") or None,  # None: the model's own task (check_models)
            "inference_params": dict(m.get("inference_params") or {}),
        })
    return out


#: ``inference_type`` -> the model tasks that answer it. The hosted API's names are the ones the
#: ``roboflow`` SDK sends (its model classes and additional models), plus ``ocr``, vidinfer's own.
#: A segmentation, keypoint or OCR model asked for ``object-detection`` still gives every box in the
#: detection shape (its entries have more keys): accepted; the other way round a detector has no
#: masks, keypoints or text.
INFERENCE_TYPES: dict[str, frozenset[str]] = {
    "object-detection": frozenset({"object-detection", "instance-segmentation", "keypoint-detection", "ocr"}),
    "instance-segmentation": frozenset({"instance-segmentation"}),
    "keypoint-detection": frozenset({"keypoint-detection"}),
    "classification": frozenset({"classification"}),
    "clip-embed-image": frozenset({"clip-embed-image"}),
    "gaze-detection": frozenset({"gaze-detection"}),
    "ocr": frozenset({"ocr"}),
}


def check_inference_type(requested: str | None, model_id: str, task: str) -> str | None:
    """The ``inference_type`` to record: the model's ``task`` when none was asked for, else the one
    asked for (``object_detection`` and other case/underscore spellings read as the hosted name) if
    the model answers it. ``task`` "" (unknown without loading the model) accepts any known value."""
    if requested is None or requested == "":
        return task or None
    name = requested.strip().lower().replace("_", "-")
    if name not in INFERENCE_TYPES:
        raise InvalidInput(f"unknown inference_type {requested[:64]!r} for model {model_id}; accepted: "
                           f"{', '.join(INFERENCE_TYPES)} (or leave it out: the model's own task)",
                           code="invalid_inference_type")
    if task and task not in INFERENCE_TYPES[name]:
        raise InvalidInput(f"inference_type {name!r} was requested, but model {model_id}'s task is {task!r}: "
                           f"send inference_type {task!r} (or leave it out)", code="inference_type_mismatch")
    return name


def check_models(registry: ModelRegistry, workspace: str, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Refuse at submit, with 400 and a code naming the fix, a model this server cannot run: unknown,
    not installed, no CLIP export, not of the ``inference_type`` asked for, or given ``inference_params``
    it does not take. Decided from the registry and installed files, never by loading a model. Returns
    the requests with each ``inference_type`` set (the model's task where absent)."""
    names = {e.name for e in registry.entries()}
    out = []
    for m in models:
        try:
            entry = registry.check_available(
                model_spec(names, set(BUILTINS), workspace, m["model_id"], m["model_version"]))
            task = entry.known_task
            # every key, and every value but class names (known once the model loads)
            params = InferenceParams.parse(m["inference_params"], ModelInfo(
                m["model_id"], task, (), None, entry.name, extra_params=entry.extra_params))
            if entry.builtin is not None:
                entry.builtin.check_params(params)
        except ModelError as exc:  # a request this server cannot run: the client's to fix, so 400
            raise InvalidInput(exc.message, code=exc.code) from exc
        out.append({**m, "inference_type": check_inference_type(m.get("inference_type"), m["model_id"], task)})
    return out

"""What a job asks for: model requests by ``model_id``/``model_version``, and its input.

Shared by the API (to refuse a bad request at once) and the workers (to run it),
so both read a request the same way.
"""

from __future__ import annotations

import re
from typing import Any

from vidinfer.errors import InvalidInput, ModelError, NotFound

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
            "inference_type": m.get("inference_type") or "object-detection",
            "inference_params": dict(m.get("inference_params") or {}),
        })
    return out

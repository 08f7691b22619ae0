"""What a job asks for: model requests by ``model_id``/``model_version``, and its input.

Shared by the API (to refuse a bad request at once) and the workers (to run it),
so both read a request the same way.
"""

from __future__ import annotations

import re
from typing import Any

from vidinfer.errors import InvalidInput, ModelError, NotFound

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def model_spec(names: set[str], builtins: set[str], workspace: str, model_id: str, model_version: str) -> str:
    """The registry name a request's model resolves to.

    Looked up, in order: ``WORKSPACE/MODEL_ID/VERSION`` and ``WORKSPACE/MODEL_ID`` (registered with
    ``vidinfer models add``), then a built-in or a globally registered ``MODEL_ID``. Never a file
    path: a request cannot make the server open a file of its choosing.
    """
    if not _ID.match(model_id) or not _ID.match(model_version):
        raise InvalidInput(f"invalid model_id/model_version {model_id[:130]!r}/{model_version[:130]!r}: "
                           "use letters, digits, '.', '_' and '-'", code="invalid_model")
    for candidate in (f"{workspace}/{model_id}/{model_version}", f"{workspace}/{model_id}", model_id):
        if candidate in names or candidate in builtins:
            return candidate
    raise ModelError(
        f"unknown model {model_id}/{model_version} in workspace {workspace!r}; register it with "
        f"`vidinfer models add {workspace}/{model_id}/{model_version} MODEL.onnx` (built-ins: "
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
    """Normalise the request's models: ``model_version`` as a string, params as a dict."""
    out = []
    for m in models:
        out.append({
            "model_id": str(m["model_id"]),
            "model_version": str(m.get("model_version") or "1"),
            "inference_type": m.get("inference_type") or "object-detection",
            "inference_params": dict(m.get("inference_params") or {}),
        })
    return out

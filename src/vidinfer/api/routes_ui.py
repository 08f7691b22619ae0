"""The web UI (static files at ``/`` and ``/ui/``) and the model list it offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from vidinfer.api.deps import CallerDep, ServiceDep
from vidinfer.api.schemas import error_responses
from vidinfer.models.registry import BUILTINS

UI_DIR = Path(__file__).parent / "ui"
router = APIRouter()


def static_files() -> StaticFiles:
    return StaticFiles(directory=UI_DIR)


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html")


@router.get("/models", tags=["video inference"], responses=error_responses(401))
def models(service: ServiceDep, caller: CallerDep) -> dict[str, list[dict[str, Any]]]:
    """The models this workspace can name in a request: built-ins, its projects, and global names."""
    out = []
    for entry in service.registry.entries():
        parts = entry.name.split("/")
        if entry.kind == "builtin" and entry.name in BUILTINS:
            out.append({"model_id": entry.name, "model_version": "1", "source": "built-in",
                        "inference_type": entry.known_task})
        elif len(parts) == 3 and parts[0] == caller.workspace:
            out.append({"model_id": parts[1], "model_version": parts[2], "source": "workspace",
                        "inference_type": entry.known_task or "object-detection"})
        elif len(parts) == 1:
            out.append({"model_id": entry.name, "model_version": "1", "source": "registered",
                        "inference_type": entry.known_task or "object-detection"})
    return {"models": out}

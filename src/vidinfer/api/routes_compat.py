"""The workspace / project / version calls the official ``roboflow`` package makes first.

A workspace's project/version is a registered model named ``WORKSPACE/PROJECT/VERSION``
(``vidinfer models add``); the project's ``type`` comes from that model's task and
picks the SDK's model class. Only the fields the SDK reads are filled in.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from vidinfer.api.deps import CallerDep, ServiceDep
from vidinfer.api.schemas import error_responses
from vidinfer.errors import NotFound
from vidinfer.models.registry import ModelEntry

router = APIRouter(tags=["roboflow SDK compatibility"], responses=error_responses(401, 404))

#: model task -> the project type the SDK knows
_PROJECT_TYPES = {
    "object-detection": "object-detection",
    "classification": "classification",
    "instance-segmentation": "instance-segmentation",
    "keypoint-detection": "keypoint-detection",
}


@router.post("/")
def whoami(caller: CallerDep) -> dict[str, str]:
    """``Roboflow(api_key)`` asks which workspace its key belongs to."""
    return {"workspace": caller.workspace}


def _projects(service: ServiceDep, workspace: str) -> dict[str, list[tuple[str, ModelEntry]]]:
    """project -> [(version, entry)] for the models registered under ``workspace/``."""
    out: dict[str, list[tuple[str, ModelEntry]]] = {}
    for entry in service.registry.entries():
        parts = entry.name.split("/")
        if len(parts) == 3 and parts[0] == workspace:
            out.setdefault(parts[1], []).append((parts[2], entry))
    return out


def _own(caller: CallerDep, workspace: str) -> None:
    if workspace != caller.workspace:
        raise NotFound(f"no workspace {workspace!r} for this key", code="workspace_not_found")


def _project_body(workspace: str, project: str, versions: list[tuple[str, ModelEntry]]) -> dict[str, Any]:
    task = next((e.task for _, e in versions if e.task), "object-detection")
    now = int(time.time())
    return {
        "id": f"{workspace}/{project}", "type": _PROJECT_TYPES.get(task, "object-detection"), "name": project,
        "annotation": project, "classes": {}, "colors": {}, "created": now, "updated": now, "images": 0,
        "unannotated": 0, "public": False, "splits": {"train": 0, "valid": 0, "test": 0},
        "versions": len(versions),
    }


def _version_body(workspace: str, project: str, version: str, entry: ModelEntry) -> dict[str, Any]:
    return {
        "id": f"{workspace}/{project}/{version}", "name": project, "version": version, "augmentation": {},
        "created": int(time.time()), "images": 0, "preprocessing": {}, "splits": {"train": 0, "valid": 0, "test": 0},
        "model": {"id": f"{project}/{version}", "endpoint": f"{project}/{version}", "modelType": entry.task or
                  "object-detection", "start": 0, "end": 0},
    }


@router.get("/{workspace}")
def workspace_info(workspace: str, caller: CallerDep, service: ServiceDep) -> dict[str, Any]:
    _own(caller, workspace)
    projects = [_project_body(workspace, p, v) for p, v in sorted(_projects(service, workspace).items())]
    return {"workspace": {"name": workspace, "url": workspace, "projects": projects, "members": []}}


def _versions(service: ServiceDep, caller: CallerDep, workspace: str, project: str) -> list[tuple[str, ModelEntry]]:
    _own(caller, workspace)
    versions = _projects(service, workspace).get(project)
    if not versions:
        raise NotFound(f"no project {workspace}/{project}: register a model for it with "
                       f"`vidinfer models add {workspace}/{project}/1 MODEL.onnx`", code="project_not_found")
    return versions


@router.get("/{workspace}/{project}")
def project_info(workspace: str, project: str, caller: CallerDep, service: ServiceDep) -> dict[str, Any]:
    versions = _versions(service, caller, workspace, project)
    return {
        "workspace": {"name": workspace, "url": workspace},
        "project": _project_body(workspace, project, versions),
        "versions": [_version_body(workspace, project, v, e) for v, e in sorted(versions)],
    }


def _entry(service: ServiceDep, caller: CallerDep, workspace: str, project: str, version: str) -> ModelEntry:
    for v, entry in _versions(service, caller, workspace, project):
        if v == version:
            return entry
    raise NotFound(f"no version {version} of {workspace}/{project}", code="version_not_found")


@router.get("/{workspace}/{project}/{version}")
def version_info(workspace: str, project: str, version: str, caller: CallerDep,
                 service: ServiceDep) -> dict[str, Any]:
    entry = _entry(service, caller, workspace, project, version)
    body = _version_body(workspace, project, version, entry)
    return {"workspace": {"name": workspace, "url": workspace},
            "project": _project_body(workspace, project, _versions(service, caller, workspace, project)),
            "version": {**body, "train": {"model": body["model"]}}}


@router.get("/{workspace}/{project}/{version}/v2/trainings")
def trainings(workspace: str, project: str, version: str, caller: CallerDep, service: ServiceDep) -> dict[str, Any]:
    entry = _entry(service, caller, workspace, project, version)
    return {"trainings": [{"id": f"{project}-{version}", "modelType": entry.task or "object-detection"}]}


@router.get("/{workspace}/{project}/{version}/v2/trainings/get")
def training(workspace: str, project: str, version: str, caller: CallerDep, service: ServiceDep) -> dict[str, Any]:
    entry = _entry(service, caller, workspace, project, version)
    return {"models": [{"modelId": f"{project}/{version}", "modelType": entry.task or "object-detection"}]}

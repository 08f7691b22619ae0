"""Name -> model: built-ins, models registered with ``vidinfer models add``, or a path.

The registry is a small JSON file in the data directory (``models.json``), so
the CLI and the server share it. Names may contain slashes: the server looks up
``WORKSPACE/PROJECT/VERSION`` the same way the CLI looks up ``people``.
Loaded models are cached per process: workers load each model once.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
from typing import TYPE_CHECKING
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vidinfer.errors import InvalidInput, ModelError
from vidinfer.models.base import Model, ModelInfo

if TYPE_CHECKING:
    from vidinfer.config import Settings

#: built-in name -> "module:factory"; imported only when used
BUILTINS: dict[str, str] = {
    "coco": "vidinfer.models.coco:CocoSSD",
    "imagenet": "vidinfer.models.imagenet:ImageNetClassifier",
    "pose": "vidinfer.models.pose:MoveNetPose",
    "gaze": "vidinfer.models.gaze:GazeDetector",
    "ocr": "vidinfer.models.ocr:RapidOCRReader",
    # the user's CLIP export: the folder registered as `clip`, else the clip_dir setting
    "clip": "vidinfer.models.clip:load_clip",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


@dataclass(frozen=True)
class ModelEntry:
    """Where a model name points: a built-in, or an ONNX file."""

    name: str
    kind: str  # "builtin" | "onnx" | "clip"
    target: str  # the built-in's name, or the absolute path of the file (of the folder, for clip)
    task: str = ""  # the model's task, recorded when registered (the API answers project calls with it)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.target}"

    @property
    def is_clip(self) -> bool:
        """A CLIP model (a registered export folder, or the built-in name), known without loading it."""
        return self.kind == "clip" or (self.kind, self.target) == ("builtin", "clip")


@dataclass(frozen=True)
class LoadOptions:
    """How to run models on this machine (from Settings)."""

    threads: int = 0
    providers: tuple[str, ...] = ()
    #: the CLIP export behind the built-in name ``clip`` (Settings.clip_dir)
    clip_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadOptions:
        providers = tuple(p.strip() for p in settings.providers.split(",") if p.strip())
        return cls(settings.ort_threads, providers, settings.clip_dir)


class ModelRegistry:
    """Resolves model specs and keeps loaded models for reuse."""

    def __init__(self, path: Path | None = None, options: LoadOptions | None = None) -> None:
        self.path = path
        self.options = options or LoadOptions()
        self._loaded: dict[str, Model] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """The registry of the data directory, loading models as the settings say."""
        return cls(settings.registry_path, LoadOptions.from_settings(settings))

    # -- the file -----------------------------------------------------------------
    def _read(self) -> dict[str, dict[str, str]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"the model registry {self.path} is unreadable: {exc}", code="registry_corrupt") from exc

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        if self.path is None:
            raise InvalidInput("no data directory is configured for the model registry")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    def entries(self) -> list[ModelEntry]:
        """Built-ins first, then registered models (a registered ``clip`` folder replaces the built-in)."""
        registered = [ModelEntry(**e) for e in self._read().values()]
        names = {e.name for e in registered}
        builtins = [ModelEntry(name, "builtin", name) for name in BUILTINS if name not in names]
        return builtins + sorted(registered, key=lambda e: e.name)

    def add(self, name: str, target: str, *, builtin: bool = False) -> tuple[ModelEntry, ModelInfo]:
        """Register ``name``; the model is loaded once to prove it works.

        A folder is a CLIP export; it may be registered as ``clip`` itself, the
        name clients send (``additional_models=["clip"]``).
        """
        clip_folder = not builtin and Path(target).is_dir()
        if not _NAME.match(name) or (name in BUILTINS and not (clip_folder and name == "clip")):
            raise InvalidInput(
                f"invalid model name {name!r}: use letters, digits, '.', '_', '-' and '/'"
                + (" (and not a built-in name)" if name in BUILTINS else ""),
                code="invalid_model_name",
            )
        if builtin:
            if target not in BUILTINS:
                raise ModelError(f"unknown built-in model {target!r}; built-ins: {', '.join(BUILTINS)}",
                                 code="unknown_model")
            entry = ModelEntry(name, "builtin", target)
        elif clip_folder:
            entry = ModelEntry(name, "clip", str(Path(target).resolve()))
        else:
            entry = ModelEntry(name, "onnx", str(Path(target).resolve()))
        model = self.load_entry(entry)
        entry = replace(entry, task=model.info.task)
        data = self._read()
        data[name] = asdict(entry)
        self._write(data)
        return entry, model.info

    def remove(self, name: str) -> None:
        data = self._read()
        if name not in data:
            raise ModelError(f"no registered model named {name!r}", code="unknown_model")
        del data[name]
        self._write(data)

    # -- resolving and loading ----------------------------------------------------
    def resolve(self, spec: str) -> ModelEntry:
        """A built-in name, a registered name, or a path to an ``.onnx`` file.

        ``clip`` is the one built-in name a registered entry (a CLIP export folder) may take over.
        """
        if spec in BUILTINS and spec != "clip":
            return ModelEntry(spec, "builtin", spec)
        registered = self._read().get(spec)
        if registered:
            return ModelEntry(**registered)
        if spec in BUILTINS:
            return ModelEntry(spec, "builtin", spec)
        if spec.lower().endswith(".onnx") or os.path.sep in spec:
            path = Path(spec)
            if not path.is_file():
                raise ModelError(f"model file not found: {spec}", code="unknown_model")
            return ModelEntry(path.stem, "onnx", str(path.resolve()))
        known = ", ".join(e.name for e in self.entries())
        raise ModelError(f"unknown model {spec!r}; known models: {known} (or give a path to an .onnx file)",
                         code="unknown_model")

    def load(self, spec: str) -> Model:
        return self.load_entry(self.resolve(spec))

    def load_entry(self, entry: ModelEntry) -> Model:
        with self._lock:
            model = self._loaded.get(entry.key)
            if model is None:
                model = self._construct(entry)
                self._loaded[entry.key] = model
            return model

    def _construct(self, entry: ModelEntry) -> Model:
        if entry.is_clip:
            from vidinfer.models.clip import load_clip

            folder = entry.target if entry.kind == "clip" else self.options.clip_dir
            return load_clip(folder, entry.name, threads=self.options.threads, providers=self.options.providers)
        if entry.kind == "builtin":
            module_name, factory = BUILTINS[entry.target].split(":")
            cls = getattr(importlib.import_module(module_name), factory)
            return cls(threads=self.options.threads)
        from vidinfer.models.onnx_yolo import load_onnx_model

        return load_onnx_model(entry.target, threads=self.options.threads, providers=self.options.providers)

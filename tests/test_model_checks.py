"""Models a deployment can use: refused at submit (400, a code, the fix named) what cannot run here, the
``inference_type`` checked against the model's task, and a model that fails at the worker costing the
others nothing.

The routes run in process (``create_app`` under Starlette's TestClient); the worker side runs a real
``Runner`` over SQLite and local blobs with ONNX graphs built here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx_graphs import anchors_output, constant_model, input_size_box_model, ultralytics_metadata
from videos import make_video

from vidinfer.api.app import create_app
from vidinfer.config import Settings
from vidinfer.errors import ModelError
from vidinfer.jobs.requests import INFERENCE_TYPES
from vidinfer.jobs.runner import Runner
from vidinfer.jobs.states import JobState
from vidinfer.jobs.store import JobStore
from vidinfer.models.registry import BUILTIN_MODELS, Builtin, ModelRegistry, Requirement
from vidinfer.storage import open_store

URL = "http://127.0.0.1:9/v.mp4"  # never fetched: the routes only check it


def settings_for(data_dir: Path, **extra: Any) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    return Settings(data_dir=data_dir, public_url="http://testserver", secret_key="test-secret",
                    url_allowlist="127.0.0.0/8", **extra)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    protos = np.full((1, 32, 160, 160), -1.0, np.float32)
    protos[0, 0, 70:85, 70:90] = 1.0
    return {
        "det": input_size_box_model(folder / "det.onnx",
                                    metadata=ultralytics_metadata("detect", ["thing"], end2end=True)),
        "seg": constant_model(folder / "seg.onnx", [anchors_output(37, 16, {0: [320, 310, 100, 80, 0.9, 5.0]}),
                                                     protos], metadata=ultralytics_metadata("segment", ["blob"])),
    }


@pytest.fixture(scope="module")
def clip_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_clip import image_encoder, text_encoder

    from vidinfer.models.clip_tokenizer import ClipTokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")  # not "clip-export": test_clip asserts its own folder's name
    image_encoder(folder / "vision_model.onnx")
    text_encoder(folder / "text_model.onnx", ClipTokenizer.bundled())
    return folder


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_files: dict[str, Path]) -> Iterator[Any]:
    """The API over a fresh data directory with no CLIP export; ``api.key`` is a key of workspace acme."""
    monkeypatch.delenv("VIDINFER_CLIP_DIR", raising=False)
    settings = settings_for(tmp_path / "data")
    registry = ModelRegistry.from_settings(settings)
    registry.add("acme/people/1", str(onnx_files["det"]))
    registry.add("acme/blobs/1", str(onnx_files["seg"]))
    app = create_app(settings)
    with TestClient(app) as client:
        client.key = app.state.service.store.create_key("acme")
        client.service = app.state.service
        yield client


def submit(api: Any, *models: dict[str, Any]) -> Any:
    return api.post("/videoinfer", params={"api_key": api.key}, json={"input_url": URL, "models": list(models)})


def jobs(api: Any) -> list[dict[str, Any]]:
    return api.get("/videoinfers", params={"api_key": api.key}).json()["jobs"]


def refused(response: Any, code: str) -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code, response.text
    return response.json()["error"]["message"]


# -- models that cannot run here are refused at submit ------------------------------------------
def test_clip_without_an_export_is_refused_with_the_fix_and_nothing_is_queued(api: Any, tmp_path: Path) -> None:
    message = refused(submit(api, {"model_id": "people", "model_version": "1"},
                             {"model_id": "clip", "model_version": "1", "inference_type": "clip-embed-image"}),
                      "model_not_configured")
    assert "vidinfer models add clip FOLDER" in message and "VIDINFER_CLIP_DIR" in message
    assert "README" in message and str(tmp_path) not in message
    assert jobs(api) == []


@pytest.mark.parametrize("layout", ["missing", "empty", "image encoder only"])
def test_a_clip_dir_without_both_encoders_is_refused_without_naming_the_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    folder = tmp_path / "clip"
    if layout != "missing":
        folder.mkdir()
    if layout == "image encoder only":
        (folder / "vision_model.onnx").write_bytes(b"x")
    settings = settings_for(tmp_path / "data", clip_dir=folder)
    app = create_app(settings)
    with TestClient(app) as client:
        client.key = app.state.service.store.create_key("acme")
        message = refused(submit(client, {"model_id": "clip"}), "model_not_configured")
        assert "VIDINFER_CLIP_DIR" in message and str(folder) not in message
        assert jobs(client) == []


def test_a_registered_file_deleted_since_is_refused(api: Any, onnx_files: dict[str, Path], tmp_path: Path) -> None:
    gone = tmp_path / "gone.onnx"
    gone.write_bytes(onnx_files["det"].read_bytes())
    api.service.registry.add("acme/gone/1", str(gone))
    gone.unlink()
    message = refused(submit(api, {"model_id": "gone", "model_version": "1"}), "model_not_installed")
    assert "vidinfer models add acme/gone/1 MODEL.onnx" in message and str(tmp_path) not in message
    assert jobs(api) == []


def test_an_unknown_model_is_a_400_naming_the_command(api: Any) -> None:
    message = refused(submit(api, {"model_id": "nosuch", "model_version": "2"}), "unknown_model")
    assert "vidinfer models add" in message
    assert jobs(api) == []


@pytest.mark.parametrize(("requirement", "hint"), [
    (Requirement("vidinfer_no_such_package", "", "pip install 'vidinfer[models]'"), "is not installed"),
    (Requirement("json", "models/face.tflite", "pip install --no-deps mediapipe==0.10.21"), "lacks its model file"),
])
def test_a_builtin_whose_package_or_file_is_missing_names_the_pip_command(
        api: Any, monkeypatch: pytest.MonkeyPatch, requirement: Requirement, hint: str) -> None:
    """The check itself is real (find_spec, the file system); only the table entry is swapped, since the
    test cannot uninstall mediapipe."""
    monkeypatch.setitem(BUILTIN_MODELS, "gaze", Builtin(BUILTIN_MODELS["gaze"].factory, "gaze-detection",
                                                        (requirement,)))
    message = refused(submit(api, {"model_id": "people"}, {"model_id": "gaze"}), "model_not_installed")
    assert hint in message and requirement.install in message and "site-packages" not in message
    assert jobs(api) == []


def test_every_builtin_is_available_here_and_its_table_task_is_its_real_task() -> None:
    """The table (one home for a built-in's needs and task) agrees with the models themselves: what it
    calls installed loads, with the task it says (clip is the user's export: checked in test_clip)."""
    registry = ModelRegistry()
    for name, builtin in BUILTIN_MODELS.items():
        if name == "clip":
            continue
        entry = registry.check_available(name)
        info = registry.load(name).info
        assert (entry.known_task, entry.extra_params) == (info.task, info.extra_params) == (
            builtin.task, builtin.extra_params), name


def test_the_table_names_the_files_the_models_open() -> None:
    from vidinfer.models import coco, gaze

    files = {r.file for b in BUILTIN_MODELS.values() for r in b.requires}
    assert {gaze.DETECTOR, gaze.MESH} <= files
    assert {"models/" + Path(p).name for p in coco._model_files()} <= files


def test_the_check_loads_no_model_and_imports_no_runtime(tmp_path: Path, onnx_files: dict[str, Path],
                                                        clip_export: Path) -> None:
    import subprocess
    import sys

    registry_file = tmp_path / "models.json"
    registry_file.write_text(json.dumps({"acme/people/1": {"name": "acme/people/1", "kind": "onnx", "task": "",
                                                           "target": str(onnx_files["det"])}}))
    script = f"""
import json, sys
from pathlib import Path
from vidinfer.jobs.requests import check_models
from vidinfer.models.registry import LoadOptions, ModelRegistry
registry = ModelRegistry(Path({str(registry_file)!r}), LoadOptions(clip_dir=Path({str(clip_export)!r})))
models = [{{"model_id": m, "model_version": "1", "inference_type": None, "inference_params": {{}}}}
          for m in ("people", "coco", "imagenet", "pose", "gaze", "ocr", "clip")]
check_models(registry, "acme", models)
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    heavy = {"onnxruntime", "cv2", "ai_edge_litert", "rapidocr", "mediapipe", "vidinfer.models.onnx_yolo",
             "vidinfer.models.gaze", "vidinfer.models.coco", "vidinfer.models.ocr"}
    assert not loaded & heavy, sorted(loaded & heavy)


@pytest.mark.parametrize(("model_id", "params", "ok"), [
    ("imagenet", {"top_k": 3, "confidence": 0.2}, True),
    ("people", {"classes": ["thing"], "overlap": 0.3}, True),
    ("people", {"top_k": 3}, False),  # an ONNX export takes the common keys only
    ("people", {"confidnce": 0.3}, False),
    ("coco", {"prompts": ["a dog"]}, False),
    ("imagenet", {"top_k": 5000}, False),  # the model's own check of its own key, run at submit
])
def test_inference_params_keys_are_checked_at_submit(api: Any, model_id: str, params: dict[str, Any],
                                                      ok: bool) -> None:
    response = submit(api, {"model_id": model_id, "inference_params": params})
    if ok:
        assert response.status_code == 200, response.text
    else:
        message = refused(response, "invalid_inference_params")
        assert "unknown inference_params key" in message or "top_k must be" in message
        assert jobs(api) == []


def test_clip_prompts_are_checked_at_submit(tmp_path: Path, clip_export: Path) -> None:
    app = create_app(settings_for(tmp_path / "data", clip_dir=clip_export))
    with TestClient(app) as client:
        client.key = app.state.service.store.create_key("acme")
        for prompts in ([], "a dog", ["a dog", "a dog"], ["a dog", ""]):
            message = refused(submit(client, {"model_id": "clip", "inference_params": {"prompts": prompts}}),
                              "invalid_inference_params")
            assert "prompts must" in message
        ok = submit(client, {"model_id": "clip", "inference_params": {"prompts": ["a dog", "a cat"]}})
        assert ok.status_code == 200, ok.text
        assert len(jobs(client)) == 1


# -- inference_type -----------------------------------------------------------------------------
@pytest.mark.parametrize(("model_id", "inference_type", "stored"), [
    ("people", None, "object-detection"),
    ("people", "object-detection", "object-detection"),
    ("people", "Object_Detection", "object-detection"),
    ("blobs", None, "instance-segmentation"),
    ("blobs", "instance-segmentation", "instance-segmentation"),
    ("blobs", "object-detection", "object-detection"),  # a segmentation model still gives every box
    ("coco", "object-detection", "object-detection"),
    ("imagenet", "classification", "classification"),
    ("pose", "keypoint-detection", "keypoint-detection"),
    ("pose", "object-detection", "object-detection"),
    ("gaze", "gaze-detection", "gaze-detection"),
    ("gaze", None, "gaze-detection"),
    ("ocr", "ocr", "ocr"),
    ("ocr", "object-detection", "object-detection"),  # OCR lines are boxes in the detection shape
])
def test_accepted_inference_types(api: Any, model_id: str, inference_type: str | None, stored: str) -> None:
    model: dict[str, Any] = {"model_id": model_id, "model_version": "1"}
    if inference_type is not None:
        model["inference_type"] = inference_type
    response = submit(api, model)
    assert response.status_code == 200, response.text
    job = api.service.store.get(response.json()["job_id"])
    assert job.models[0]["inference_type"] == stored


@pytest.mark.parametrize(("model_id", "inference_type", "task"), [
    ("people", "instance-segmentation", "object-detection"),  # a detector has no masks
    ("people", "classification", "object-detection"),
    ("coco", "keypoint-detection", "object-detection"),
    ("blobs", "keypoint-detection", "instance-segmentation"),
    ("imagenet", "object-detection", "classification"),
    ("gaze", "object-detection", "gaze-detection"),
    ("pose", "gaze-detection", "keypoint-detection"),
    ("ocr", "clip-embed-image", "ocr"),
])
def test_a_mismatch_names_both_tasks(api: Any, model_id: str, inference_type: str, task: str) -> None:
    message = refused(submit(api, {"model_id": model_id, "model_version": "1", "inference_type": inference_type}),
                      "inference_type_mismatch")
    assert f"task is {task!r}" in message and f"{inference_type!r} was requested" in message
    assert jobs(api) == []


@pytest.mark.parametrize("value", ["foo-bar", "detection", "semantic-segmentation", " "])
def test_an_unknown_inference_type_lists_the_accepted_ones(api: Any, value: str) -> None:
    message = refused(submit(api, {"model_id": "people", "inference_type": value}), "invalid_inference_type")
    assert all(name in message for name in INFERENCE_TYPES)
    assert jobs(api) == []


def test_every_name_the_roboflow_sdk_sends_is_accepted() -> None:
    """The SDK's model classes and additional models (roboflow 1.7.3, models/inference.py and video.py)."""
    sdk = pytest.importorskip("roboflow.models.inference")
    video = pytest.importorskip("roboflow.models.video")
    sent = {m["inference_type"] for m in sdk.SUPPORTED_ADDITIONAL_MODELS.values()}
    sent |= set(video.SUPPORTED_ROBOFLOW_MODELS)
    sent |= {"object-detection", "classification", "instance-segmentation", "keypoint-detection"}
    assert sent <= set(INFERENCE_TYPES)


def test_clip_with_an_export_is_accepted_and_checked(tmp_path: Path, clip_export: Path) -> None:
    app = create_app(settings_for(tmp_path / "data", clip_dir=clip_export))
    with TestClient(app) as client:
        client.key = app.state.service.store.create_key("acme")
        ok = submit(client, {"model_id": "clip", "inference_type": "clip-embed-image"})
        assert ok.status_code == 200, ok.text
        message = refused(submit(client, {"model_id": "clip", "inference_type": "classification"}),
                          "inference_type_mismatch")
        assert "clip-embed-image" in message
        assert len(jobs(client)) == 1


# -- the worker: a model that cannot load costs the others nothing ----------------------------------
@pytest.fixture
def worker(tmp_path: Path, onnx_files: dict[str, Path]) -> Runner:
    settings = settings_for(tmp_path / "data")
    return Runner(settings, JobStore(settings.database), open_store(settings), ModelRegistry.from_settings(settings))


def run_job(worker: Runner, video: Path, model_ids: list[str]) -> tuple[Any, dict[str, Any] | None]:
    key = f"uploads/acme/{video.stem}/{video.name}"
    worker.blobs.put_file(key, video)
    models = [{"model_id": m, "model_version": "1", "inference_type": None, "inference_params": {}}
              for m in model_ids]
    job, _ = worker.store.create("acme", input_url=worker.blobs.sign_url("GET", key, 600), infer_fps="2",
                                 models=models)
    claimed = worker.store.claim("test-worker")
    assert claimed is not None and claimed.id == job.id
    worker.run(claimed)
    job = worker.store.get(job.id)
    results = json.loads(worker.blobs.get_bytes(job.result_key)) if job.result_key else None
    return job, results


def test_a_model_deleted_after_submit_leaves_the_others_their_results(worker: Runner, tmp_path: Path,
                                                                      onnx_files: dict[str, Path]) -> None:
    gone = tmp_path / "gone.onnx"
    gone.write_bytes(onnx_files["det"].read_bytes())
    cli = ModelRegistry(worker.registry.path)  # `vidinfer models add` / `remove`, beside the worker
    cli.add("acme/people/1", str(onnx_files["det"]))
    cli.add("acme/gone/1", str(gone))
    cli.add("acme/unregistered/1", str(onnx_files["det"]))
    gone.unlink()  # after the API accepted the job, before a worker loads it
    cli.remove("acme/unregistered/1")
    video = make_video(tmp_path / "v.mp4", frames=20, fps=10, size=(96, 64))
    job, results = run_job(worker, video, ["people", "gone", "unregistered"])
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    assert results is not None and len(results["frame_offset"]) == 4
    assert all(entry is not None and entry["predictions"] for entry in results["people"])
    assert results["gone"] == [None] * 4 and results["unregistered"] == [None] * 4
    warnings = " ".join(job.stats["warnings"])
    assert "model gone could not be loaded" in warnings and "model unregistered could not be loaded" in warnings
    assert str(tmp_path) not in warnings
    assert job.stats["null_frames"] == 4


def test_the_job_fails_only_when_no_model_loads(worker: Runner, tmp_path: Path, onnx_files: dict[str, Path]) -> None:
    gone = tmp_path / "gone.onnx"
    gone.write_bytes(onnx_files["det"].read_bytes())
    ModelRegistry(worker.registry.path).add("acme/gone/1", str(gone))
    gone.unlink()
    job, results = run_job(worker, make_video(tmp_path / "v.mp4", frames=10, fps=10, size=(96, 64)), ["gone"])
    assert job.state is JobState.FAILED and results is None
    assert job.error_code == "unknown_model"


def test_the_local_cli_stays_strict(tmp_path: Path) -> None:
    """``vidinfer infer`` on one machine says at once that a model does not load (no job to save)."""
    from vidinfer.inference import ModelRequest, resolve_runs

    with pytest.raises(ModelError):
        resolve_runs(ModelRegistry(), [ModelRequest("coco", "coco"), ModelRequest("x", str(tmp_path / "x.onnx"))])


def test_an_unexpected_error_in_a_job_reaches_the_client_without_its_text(worker: Runner, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A bug's exception text can hold server paths and data: the job's message names only its type; the
    traceback goes to the worker's log (the distributed engine's steps say the same, tests/test_stuck_jobs.py)."""
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("/srv/secret/path/input.mp4 broke")

    monkeypatch.setattr("vidinfer.jobs.runner.run_inference", broken)
    video = make_video(tmp_path / "v.mp4", frames=10, fps=10, size=(96, 64))
    with caplog.at_level("ERROR", logger="vidinfer.jobs.runner"):
        job, results = run_job(worker, video, ["coco"])
    assert job.state is JobState.FAILED and job.error_code == "internal_error" and results is None
    assert "ValueError" in job.error_message and "/srv/secret" not in job.error_message, job.error_message
    assert "/srv/secret/path/input.mp4 broke" in caplog.text

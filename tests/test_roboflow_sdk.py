"""The official ``roboflow`` pip package (1.7.3, the ``test`` extra) drives a real ``vidinfer serve``.

What the package really does (read from roboflow 1.7.3's source; the server must answer it unchanged):

Pointing it at a server
  ``roboflow.config`` resolves ``API_URL`` once at import: the environment variable, else the key in the
  JSON file ``$ROBOFLOW_CONFIG_DIR`` (default ``~/.config/roboflow/config.json``), else the region default
  (``ROBOFLOW_REGION``/``ROBOFLOW_ENVIRONMENT``). Every module copies it (``from roboflow.config import
  API_URL``); ``roboflow.config.refresh_region_urls()`` re-resolves and rebinds those copies, which is how
  this test points an already imported package at a new server. ``version.py`` calls ``load_dotenv()`` at
  import, after ``API_URL`` was resolved, so a ``.env`` file has no effect on it. All HTTP goes through
  ``requests`` (``roboflow.util.http``) with ``User-Agent: roboflow-python/1.7.3`` and **no timeout**.

``Roboflow(api_key)``
  A key with no lowercase letter is an offline "onboarding" key (nothing is sent). Otherwise
  ``POST {API_URL}/?api_key=K`` (no body): 401 raises ``RuntimeError(body text)``; any other status but
  exactly 200 is retried 5 times, 1 s apart, then raises. 200 must carry ``{"workspace": "<slug>"}``.
``.workspace()``
  ``GET {API_URL}/<slug>?api_key=K`` (exactly 200) -> ``{"workspace": {"name", "url", "projects"}}``;
  ``url`` is the slug used in the next calls.
``.project(P)``
  ``P`` may not contain "/". ``GET {API_URL}/<url>/<P>?api_key=K`` (exactly 200) -> ``{"project": {...}}``
  with ``annotation, classes, colors, created, id, images, name, public, splits, type, unannotated, updated``
  (``created``/``updated`` go through ``datetime.fromtimestamp``; ``multilabel`` optional). ``id`` is split
  on "/" into workspace and project for the following calls.
``.version(V)``
  The same project GET again; walks ``versions`` and picks the one whose ``basename(id) == str(V)``; each
  needs ``augmentation, created, id, images, preprocessing, splits``; ``model`` must be truthy or
  ``version.model`` is ``None``. ``version.model`` (a DeprecationWarning in 1.7) is chosen by the project's
  ``type``: ObjectDetectionModel, ClassificationModel, InstanceSegmentationModel, KeypointDetectionModel
  (also semantic-segmentation and text-image-pairs, which video inference refuses).

``model.predict_video(path, fps=5, additional_models=None, prediction_type="batch-video")``
  Client-side checks: ``fps > 120`` raises; ``prediction_type`` must be ``"batch-video"``;
  ``additional_models`` only from ``clip``, ``gaze``. No MIME check on the file (unlike the older
  ``VideoInferenceModel``).
  For a local path (not starting with ``http://``/``https://``):
  1. ``POST {API_URL}/video_upload_signed_url?api_key=K`` (no trailing slash), ``Content-Type:
     application/json``, body ``{"file_name": basename(path)}``; not ``ok`` raises with the body text.
  2. ``signed_url.split("&X-Goog-Expires")[1].split("&")[0].strip("=")``: the URL must contain the literal
     ``&X-Goog-Expires=`` (preceded by ``&``, so it cannot be the first query parameter), else IndexError.
  3. Reads the whole file into memory, ``PUT signed_url`` with ``Content-Type: application/octet-stream``
     (and requests' Content-Length); status >= 400 raises with the body text.
  For a URL: no upload, the URL is sent as ``input_url`` and ``signed_url_expires`` is ``None``.
  4. ``POST {API_URL}/videoinfer/?api_key=K`` (trailing slash), ``Content-Type: application/json``,
     ``{"input_url", "infer_fps": fps (as given, int or float), "models": [...]}``; never
     ``inference_params`` nor ``notify_url``. Not ``ok`` raises with the body text; ``job_id`` read from JSON.
  Returns ``(job_id, signed_url, signed_url_expires)``.
  ``models[0]`` is ``{"model_id": dataset_id, "model_version": version, "inference_type": T}``, where
  ``InferenceModel.__init__`` does ``dataset_id, version = version_dict["id"].rsplit("/")[1:3]``: the
  **project slug without the workspace**, and the version as a **string** (ObjectDetection,
  Classification and KeypointDetection take it from ``basename(version id)``, InstanceSegmentation from the
  split; same value). ``T`` comes from the Python class name: object-detection, classification,
  instance-segmentation, keypoint-detection (GazeModel -> gaze-detection, CLIPModel -> clip-embed-image,
  which send ``{"model_id": "gaze"|"clip", "model_version": "1"}`` instead). ``additional_models`` append
  ``{"model_id": "clip", "model_version": "1", "inference_type": "clip-embed-image"}`` /
  ``{"model_id": "gaze", "model_version": "1", "inference_type": "gaze-detection"}``. So the server must
  resolve ``model_id`` within the API key's workspace (``<ws>/<model_id>/<model_version>``) and reserve
  ``clip``/``gaze`` as built-ins.

``model.poll_for_video_results(job_id=None)``
  ``GET {API_URL}/videoinfer/?api_key=K&job_id=J`` with ``Content-Type: application/json`` (``job_id``
  concatenated unescaped: a str is required). Not ``ok`` raises. No ``"status"`` key -> ``{}``;
  ``status > 1`` -> the status dict itself is returned (a failed job looks like results); ``status == 1``
  -> ``{}``; otherwise ``GET output_signed_url`` (with ``Content-Type: application/json``, no key) and
  return its ``.json()``. ``status`` must be a number (``None > 1`` is a TypeError).
``model.poll_until_video_results(job_id)``
  ``job_id`` is positional and required; loops ``time.sleep(60)`` **before** every
  ``poll_for_video_results(job_id)`` until it returns something other than ``{}``, so the first answer comes
  after 60 s and a failed job's status dict is returned as results. One status call a minute per job.

Speeding it up in a test: ``roboflow/models/inference.py`` does ``import time`` and calls ``time.sleep(60)``;
patching ``time.sleep`` there would patch it for everything, so this test replaces the module's ``time``
binding (``monkeypatch.setattr(roboflow.models.inference, "time", FastTime)``) with an object whose
``sleep`` records the request and sleeps briefly.
"""

from __future__ import annotations

import importlib
import shutil
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fileserver import serve_directory
from onnx_graphs import anchors_output, channel_mean_classifier, constant_model, ultralytics_metadata
from server import Server
from videos import make_video

roboflow = pytest.importorskip("roboflow", reason="the official roboflow package is in the test extra")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

WORKSPACE = "acme"
FPS = 5
#: project slug -> (project type, vidinfer models add target)
PROJECTS = {
    "people": ("object-detection", "--builtin coco"),
    "fruit": ("classification", "cls.onnx"),
    "blobs": ("instance-segmentation", "seg.onnx"),
    "poses": ("keypoint-detection", "pose.onnx"),
}


def build_models(folder: Path) -> dict[str, Path]:
    """Tiny ONNX graphs with known outputs for the non-detection project types."""
    protos = np.full((1, 32, 160, 160), -1.0, np.float32)
    protos[0, 1:] = 0
    protos[0, 0, 70:85, 70:90] = 1.0
    seg = constant_model(folder / "seg.onnx", [anchors_output(37, 16, {0: [320, 310, 100, 80, 0.9, 5.0]}), protos],
                         metadata=ultralytics_metadata("segment", ["blob"]))
    keypoints = np.ravel([[300 + 2 * k, 250 + 3 * k, 0.9] for k in range(17)])
    pose = constant_model(folder / "pose.onnx", [anchors_output(56, 16, {0: [320, 320, 100, 200, 0.9, *keypoints]})],
                          metadata=ultralytics_metadata("pose", ["person"], kpt_shape=(17, 3)))
    cls = channel_mean_classifier(folder / "cls.onnx", metadata=ultralytics_metadata(
        "classify", ["red", "green", "blue"], imgsz=(224, 224)))
    return {"seg.onnx": seg, "pose.onnx": pose, "cls.onnx": cls}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("roboflow-sdk")
    files = build_models(root)
    srv = Server(root / "data")
    for project, (_, target) in PROJECTS.items():
        where = ["--builtin", "coco"] if target.startswith("--builtin") else [str(files[target])]
        srv.cli("models", "add", f"{WORKSPACE}/{project}/1", *where)
    with srv:
        yield srv


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    key = server.key(WORKSPACE)
    assert any(c.islower() for c in key), "a key without lowercase letters sends the SDK offline"
    return key


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("videos") / "clip.mp4", frames=20, fps=10, size=(96, 64))


class FastTime:
    """Stands in for the ``time`` module inside ``roboflow.models.inference``: records, sleeps 0.2 s."""

    def __init__(self) -> None:
        self.requested: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.requested.append(seconds)
        time.sleep(0.2)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def rf(server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    """The roboflow package pointed at the test server, with no user config and a fast poll loop."""
    monkeypatch.setenv("API_URL", server.url)
    monkeypatch.setenv("ROBOFLOW_CONFIG_DIR", str(tmp_path / "no-config.json"))
    for name in ("ROBOFLOW_REGION", "ROBOFLOW_ENVIRONMENT", "ROBOFLOW_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    roboflow.config.refresh_region_urls()
    inference = importlib.import_module("roboflow.models.inference")
    assert inference.API_URL == server.url
    monkeypatch.setattr(inference, "time", FastTime())
    return roboflow


def model_of(rf: types.ModuleType, key: str, project: str, version: int | str = 1) -> Any:
    model = rf.Roboflow(api_key=key).workspace().project(project).version(version).model
    assert model is not None, "the version answer needs a non-empty 'model'"
    return model


def poll(model: Any, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """``poll_for_video_results`` every 0.2 s until it returns something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = model.poll_for_video_results(job_id)
        if answer != {}:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def assert_results(results: dict[str, Any], model_ids: list[str]) -> int:
    assert "status" not in results, f"a failed job came back as results: {results}"
    frames = len(results["frame_offset"])
    assert frames == 2 * FPS  # 2 s of video at FPS
    assert results["frame_offset"] == [2 * i for i in range(frames)]  # 10 fps source, 5 fps sampled
    assert results["time_offset"] == [round(i / FPS, 4) for i in range(frames)]
    for model_id in model_ids:
        assert len(results[model_id]) == frames, model_id
    return frames


def test_detection_local_file_until_results(rf: types.ModuleType, key: str, video: Path) -> None:
    model = model_of(rf, key, "people")
    assert type(model).__name__ == "ObjectDetectionModel"
    job_id, signed_url, expires = model.predict_video(str(video), fps=FPS, prediction_type="batch-video")
    assert isinstance(job_id, str) and signed_url.startswith(rf.config.API_URL)
    assert expires and expires.isdigit()
    results = model.poll_until_video_results(job_id)
    assert_results(results, ["people"])
    entry = results["people"][0]
    assert entry["image"] == {"width": 96, "height": 64}
    assert isinstance(entry["predictions"], list)
    inference = importlib.import_module("roboflow.models.inference")
    assert inference.time.requested and set(inference.time.requested) == {60}
    assert model.poll_for_video_results(job_id) == results  # asking again answers the same results


def test_detection_url_with_poll_for_results(rf: types.ModuleType, key: str, video: Path, tmp_path: Path) -> None:
    shutil.copy(video, tmp_path / "remote.mp4")
    model = model_of(rf, key, "people")
    with serve_directory(tmp_path) as base:
        job_id, signed_url, expires = model.predict_video(f"{base}/remote.mp4", fps=FPS)
        assert (signed_url, expires) == (f"{base}/remote.mp4", None)
        first = model.poll_for_video_results(job_id)
        assert first == {} or "frame_offset" in first  # {} while queued or running
        results = poll(model, job_id)
    assert_results(results, ["people"])


@pytest.mark.parametrize("project", ["fruit", "blobs", "poses"])
def test_other_project_types(rf: types.ModuleType, key: str, video: Path, project: str) -> None:
    kind, _ = PROJECTS[project]
    model = model_of(rf, key, project)
    job_id, _, _ = model.predict_video(str(video), fps=FPS)
    assert model.type == kind  # set by predict_video from the class the project's type picked
    results = model.poll_until_video_results(job_id)
    assert_results(results, [project])
    entry = results[project][0]
    if kind == "classification":
        assert entry["top"] in ("red", "green", "blue") and 0 <= entry["confidence"] <= 1
        assert {p["class"] for p in entry["predictions"]} == {"red", "green", "blue"}
    elif kind == "instance-segmentation":
        (prediction,) = entry["predictions"]
        assert prediction["class"] == "blob" and len(prediction["points"]) >= 3
    else:
        (prediction,) = entry["predictions"]
        assert prediction["class"] == "person" and len(prediction["keypoints"]) == 17


def test_additional_models_gaze(rf: types.ModuleType, key: str, video: Path) -> None:
    model = model_of(rf, key, "people")
    job_id, _, _ = model.predict_video(str(video), fps=FPS, additional_models=["gaze"])
    results = model.poll_until_video_results(job_id)
    assert_results(results, ["people", "gaze"])
    assert all(entry is None or entry["predictions"] == [] for entry in results["gaze"])  # no faces in the video


def test_clip_and_gaze_without_a_clip_export_fail_at_submit_then_run_once_one_is_registered(
        rf: types.ModuleType, server: Server, key: str, video: Path, tmp_path: Path) -> None:
    """The SDK's own example, ``additional_models=["clip", "gaze"]``: without a CLIP export the submit is
    refused (400; the SDK raises with the body, which names the fix) and nothing is queued, instead of a
    job that loses every model's results a minute later. With a (tiny) export registered it runs."""
    import httpx
    from test_clip import image_encoder, text_encoder

    from vidinfer.models.clip_tokenizer import ClipTokenizer

    def job_count() -> int:
        return len(httpx.get(f"{server.url}/videoinfers", params={"api_key": key}).json()["jobs"])

    before = job_count()
    model = model_of(rf, key, "people")
    with pytest.raises(Exception, match="model_not_configured") as refused:
        model.predict_video(str(video), fps=FPS, additional_models=["clip", "gaze"])
    assert "vidinfer models add clip FOLDER" in str(refused.value) and "VIDINFER_CLIP_DIR" in str(refused.value)
    assert job_count() == before

    image_encoder(tmp_path / "vision_model.onnx")
    text_encoder(tmp_path / "text_model.onnx", ClipTokenizer.bundled())
    server.cli("models", "add", "clip", str(tmp_path))
    try:
        job_id, _, _ = model.predict_video(str(video), fps=FPS, additional_models=["clip", "gaze"])
        results = model.poll_until_video_results(job_id)
    finally:
        server.cli("models", "remove", "clip")
    frames = assert_results(results, ["people", "clip", "gaze"])
    assert all(entry is not None and len(entry["embeddings"][0]) == 16 for entry in results["clip"])
    assert sum(entry is not None for entry in results["people"]) == frames


def test_the_gaze_model_class_alone(rf: types.ModuleType, key: str, video: Path) -> None:
    model = rf.GazeModel(key, f"{WORKSPACE}/people/1")  # no project calls: sends only the gaze model
    job_id, _, _ = model.predict_video(str(video), fps=FPS)
    results = poll(model, job_id)
    assert_results(results, ["gaze"])
    assert "people" not in results


def test_a_failed_job_comes_back_as_its_status(rf: types.ModuleType, key: str, tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    model = model_of(rf, key, "people")
    job_id, _, _ = model.predict_video(str(junk), fps=FPS)
    answer = model.poll_until_video_results(job_id)
    assert answer["status"] >= 2
    assert answer["error"]["code"] and answer["error"]["message"]


def test_a_wrong_key_is_refused_with_the_body(rf: types.ModuleType) -> None:
    with pytest.raises(RuntimeError, match="error"):
        rf.Roboflow(api_key="not-a-real-key")


def test_another_workspace_cannot_poll_the_job(rf: types.ModuleType, server: Server, key: str,
                                               video: Path) -> None:
    model = model_of(rf, key, "people")
    job_id, _, _ = model.predict_video(str(video), fps=FPS)
    other = server.key("other-team")
    assert rf.Roboflow(api_key=other).current_workspace == "other-team"
    from roboflow.models.object_detection import ObjectDetectionModel

    intruder = ObjectDetectionModel(other, "other-team/people/1", "people", "1")
    with pytest.raises(Exception, match="Error getting video inference results"):
        intruder.poll_for_video_results(job_id)
    assert_results(poll(model, job_id), ["people"])

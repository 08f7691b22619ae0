"""The offline built-ins see what a person sees in real photos (scikit-image ships them).

Each model is loaded once per module (loading is the slow part); single images
go straight to ``predict`` at the size the model asks for, and one test per
model runs a real encoded video through the whole pipeline to the wire JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

from vidinfer.core.model import InferenceParams, Model
from vidinfer.core.results import FramePrediction
from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.registry import BUILTINS, ModelRegistry
from vidinfer.wire import prediction_to_json

OFFLINE_BUILTINS = ("imagenet", "pose", "gaze")


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry()


def infer_image(model: Model, image: np.ndarray, **params: object) -> dict:
    """One RGB photo through the model, resized the way the pipeline would, as wire JSON."""
    height, width = image.shape[:2]
    size = model.image_size((width, height))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    parsed = InferenceParams.parse(params, model.info)
    (out,) = model.predict([resized], (width, height), parsed)
    return prediction_to_json(FramePrediction(out, (width, height), 0.0))


def photos_video(path: Path, photos: Sequence[np.ndarray], size: tuple[int, int] = (640, 480),
                 fps: int = 4, seconds_each: int = 1) -> Path:
    """An H.264 video showing each photo (stretched to ``size``) for ``seconds_each`` seconds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for photo in photos:
            frame = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
            for _ in range(fps * seconds_each):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("name", OFFLINE_BUILTINS)
def test_each_builtin_states_its_licence_and_source(registry: ModelRegistry, name: str) -> None:
    assert name in BUILTINS
    info = registry.load(name).info
    assert info.name == name
    assert "Apache-2.0" in info.license
    assert "PyPI" in info.source


# -- imagenet ------------------------------------------------------------------------
CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def test_imagenet_sees_a_cat(registry: ModelRegistry) -> None:
    out = infer_image(registry.load("imagenet"), data.chelsea())
    assert out["top"] in CAT_CLASSES
    top3 = {p["class"] for p in out["predictions"][:3]}
    assert len(top3 & CAT_CLASSES) >= 2  # the other cat breeds follow
    assert out["image"] == {"width": 451, "height": 300}


def test_imagenet_sees_an_espresso_and_lists_top_k(registry: ModelRegistry) -> None:
    model = registry.load("imagenet")
    out = infer_image(model, data.coffee(), top_k=3)
    assert out["top"] == "espresso"
    assert out["confidence"] > 0.5
    assert len(out["predictions"]) == 3
    espresso = model.info.classes.index("espresso")
    assert out["predictions"][0] == {"class": "espresso", "class_id": espresso, "confidence": out["confidence"]}
    confidences = [p["confidence"] for p in out["predictions"]]
    assert confidences == sorted(confidences, reverse=True)


def test_imagenet_refuses_a_bad_top_k(registry: ModelRegistry) -> None:
    from vidinfer.errors import ModelError

    with pytest.raises(ModelError, match="top_k"):
        infer_image(registry.load("imagenet"), data.coffee(), top_k=0)


# -- pose ----------------------------------------------------------------------------
def _keypoints(entry: dict) -> dict[str, dict]:
    (person,) = entry["predictions"]
    return {k["class"]: k for k in person["keypoints"]}


def test_pose_puts_the_astronauts_face_above_her_shoulders(registry: ModelRegistry) -> None:
    out = infer_image(registry.load("pose"), data.astronaut())
    (person,) = out["predictions"]
    assert person["class"] == "person" and person["class_id"] == 0
    kp = _keypoints(out)
    assert len(kp) == 17
    for name in ("nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"):
        assert kp[name]["confidence"] > 0.4, name
    # the face (nose, eyes) is at about (220, 110) in the 512x512 photo
    assert 180 < kp["nose"]["x"] < 260 and 80 < kp["nose"]["y"] < 160
    assert kp["nose"]["y"] < kp["left_shoulder"]["y"] - 80
    assert kp["nose"]["y"] < kp["right_shoulder"]["y"] - 80
    assert kp["left_eye"]["y"] < kp["nose"]["y"] and kp["right_eye"]["y"] < kp["nose"]["y"]
    # she faces the camera: her left side is on the image's right
    assert kp["right_shoulder"]["x"] < kp["nose"]["x"] < kp["left_shoulder"]["x"]
    assert kp["right_eye"]["x"] < kp["left_eye"]["x"]
    # the box holds the face and shoulders
    x1, x2 = person["x"] - person["width"] / 2, person["x"] + person["width"] / 2
    y1 = person["y"] - person["height"] / 2
    assert x1 < kp["right_shoulder"]["x"] and kp["left_shoulder"]["x"] < x2 and y1 < kp["left_eye"]["y"]


def test_pose_finds_nobody_in_a_coffee_cup(registry: ModelRegistry) -> None:
    out = infer_image(registry.load("pose"), data.coffee())
    assert out["predictions"] == []


# -- through the pipeline --------------------------------------------------------------
def test_imagenet_and_pose_run_over_a_video(registry: ModelRegistry, tmp_path: Path) -> None:
    video = photos_video(tmp_path / "photos.mp4", [data.astronaut(), data.chelsea()])
    runs = resolve_runs(registry, [ModelRequest("imagenet", "imagenet"), ModelRequest("pose", "pose")])
    results = run_inference(str(video), runs, Fraction(2)).results_json
    assert results["time_offset"] == [0.0, 0.5, 1.0, 1.5]
    astronaut, cat = results["pose"][:2], results["imagenet"][2:]
    assert all(len(entry["predictions"]) == 1 for entry in astronaut)
    assert all(entry["top"] in CAT_CLASSES for entry in cat)
    assert all(entry["image"] == {"width": 640, "height": 480} for entry in results["imagenet"])


# -- gaze ----------------------------------------------------------------------------
def turn_face(image: np.ndarray, box: Sequence[float], shift: float) -> np.ndarray:
    """Slide the middle of the face ``shift`` px sideways, its outline fixed: a head turning that way.

    (A perspective warp of the whole picture would not do: it is what turning
    the *camera* looks like, and the head's pose relative to the camera ray
    stays the same.)
    """
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, 0.75 * (x2 - x1), 0.9 * (y2 - y1)
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    bump = np.clip(1 - ((xs - cx) / rx) ** 2, 0, 1) * np.clip(1 - ((ys - cy) / ry) ** 2, 0, 1)
    return cv2.remap(image, xs - shift * bump, ys, cv2.INTER_LINEAR)


def _face(entry: dict) -> tuple[dict, float, float]:
    (pred,) = entry["predictions"]
    return pred["face"], math.degrees(pred["yaw"]), math.degrees(pred["pitch"])


def test_gaze_finds_the_astronaut_looking_at_the_camera(registry: ModelRegistry) -> None:
    face, yaw, pitch = _face(infer_image(registry.load("gaze"), data.astronaut()))
    assert abs(yaw) < 10 and abs(pitch) < 10
    assert face["class"] == "face" and face["class_id"] == 0 and face["confidence"] > 0.7
    # her face spans about x 175-275, y 65-175 in the 512x512 photo
    assert 200 < face["x"] < 250 and 95 < face["y"] < 145 and 80 < face["width"] < 130
    right_eye, left_eye, nose, mouth, right_ear, left_ear = ((p["x"], p["y"]) for p in face["landmarks"])
    assert right_ear[0] < right_eye[0] < nose[0] < left_eye[0] < left_ear[0]  # her right is the image's left
    assert right_eye[1] < nose[1] < mouth[1] and left_eye[1] < nose[1]


@pytest.mark.parametrize(("shift", "sign"), [(30, -1), (-30, 1)])
def test_gaze_yaw_follows_a_turned_head(registry: ModelRegistry, shift: float, sign: int) -> None:
    model = registry.load("gaze")
    photo = data.astronaut()
    face, _, _ = _face(infer_image(model, photo))
    box = (face["x"] - face["width"] / 2, face["y"] - face["height"] / 2,
           face["x"] + face["width"] / 2, face["y"] + face["height"] / 2)
    ahead = _gaze(infer_image(model, photo))
    turned = _gaze(infer_image(model, turn_face(photo, box, shift)))
    # features slid to the image's right = the head turned to the image's right = head yaw < 0. (The warp
    # squeezes each eye unevenly, which no real turn does, so the eyes' own angle is not checked here.)
    assert sign * (turned["head_yaw"] - ahead["head_yaw"]) > 4
    assert sign * turned["head_yaw"] > 3
    assert abs(turned["head_pitch"]) < 10


def _irises(model: Model, image: np.ndarray) -> tuple[list[np.ndarray], float]:
    """The iris centres the model finds on the one face in ``image``, and the iris radius in pixels."""
    from vidinfer.models.gaze import EYES, GazeDetector

    assert isinstance(model, GazeDetector)
    mesh = model.mesh(image, model.detect(image, 0.5)[0])
    assert mesh is not None
    centres = [model.iris(image, mesh, first, second, mirror).centre for first, second, mirror in EYES]
    width = float(np.linalg.norm(mesh[133, :2] - mesh[33, :2]))
    return centres, 0.23 * width  # an iris is ~12 mm across in a ~28 mm wide eye


def move_irises(image: np.ndarray, centres: Sequence[np.ndarray], radius: float, dx: int, dy: int) -> np.ndarray:
    """Repaint each iris ``dx``, ``dy`` px away, the white of the eye where it was: the eyes turn, the head not."""
    out = image.copy()
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    disks = [(xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2 for cx, cy in centres]
    for (cx, cy), disk in zip(centres, disks):
        eye = image[int(cy - radius):int(cy + radius) + 1, int(cx - 2.5 * radius):int(cx + 2.5 * radius) + 1]
        grey = eye.mean(axis=2)
        out[disk] = eye[grey >= np.percentile(grey, 85)].mean(axis=0)  # the brightest of the eye: its white
    for disk in disks:
        out[np.roll(disk, (dy, dx), axis=(0, 1))] = image[disk]
    return out


def _gaze(entry: dict) -> dict[str, float | str]:
    """The one face's angles in degrees, and where they come from."""
    (pred,) = entry["predictions"]
    out: dict[str, float | str] = {k: math.degrees(pred[k]) for k in ("yaw", "pitch", "head_yaw", "head_pitch")}
    out["source"] = pred["gaze_source"]
    return out


@pytest.mark.parametrize(("dx", "dy"), [(-3, 0), (3, 0), (0, -3), (0, 3)])
def test_gaze_follows_irises_moved_while_the_head_stays(registry: ModelRegistry, dx: int, dy: int) -> None:
    model = registry.load("gaze")
    photo = data.astronaut()  # 512x512: the pipeline feeds it unscaled, so model pixels are photo pixels
    ahead = _gaze(infer_image(model, photo))
    centres, radius = _irises(model, photo)
    moved = _gaze(infer_image(model, move_irises(photo, centres, radius, dx, dy)))
    assert ahead["source"] == moved["source"] == "eyes"
    # the head did not move: its pose stays within a few degrees (measured: <= 3.1)
    assert abs(moved["head_yaw"] - ahead["head_yaw"]) < 2 and abs(moved["head_pitch"] - ahead["head_pitch"]) < 4
    turn_yaw, turn_pitch = moved["yaw"] - ahead["yaw"], moved["pitch"] - ahead["pitch"]
    # irises to the image's left = looking to the image's left = yaw up; irises up = looking up = pitch up
    # (measured for 3 px on a 19.5 px wide eye: yaw +16.6 / -13.7, pitch +9.7 / -4.1 degrees)
    if dx:
        assert -dx * turn_yaw > 8 and abs(turn_pitch) < 4
    else:
        assert -dy * turn_pitch > 3 and abs(turn_yaw) < 5
        eyes_turn = (moved["pitch"] - moved["head_pitch"]) - (ahead["pitch"] - ahead["head_pitch"])
        assert -dy * eyes_turn > 5  # within the head, the eyes alone turned more


def test_gaze_falls_back_to_the_head_when_the_eyes_are_covered(registry: ModelRegistry) -> None:
    model = registry.load("gaze")
    photo = data.astronaut()
    centres, radius = _irises(model, photo)
    covered = photo.copy()
    for cx, cy in centres:  # a skin-coloured patch over each eye, from the cheek below it
        skin = photo[int(cy + 4 * radius):int(cy + 5.5 * radius), int(cx - radius):int(cx + radius)]
        cv2.ellipse(covered, (round(cx), round(cy)), (round(3.3 * radius), round(1.8 * radius)), 0, 0, 360,
                    skin.reshape(-1, 3).mean(axis=0).tolist(), -1)
    gaze = _gaze(infer_image(model, covered))
    # the face mesh still draws open eyes there; the missing dark iris is what tells
    assert gaze["source"] == "head"
    assert gaze["yaw"] == gaze["head_yaw"] and gaze["pitch"] == gaze["head_pitch"]
    assert abs(gaze["yaw"]) < 10


def test_gaze_uses_the_eyes_down_to_8_px_wide_and_the_head_below(registry: ModelRegistry) -> None:
    model = registry.load("gaze")
    full = _gaze(infer_image(model, data.astronaut()))  # eyes ~19.5 px wide
    small = _gaze(infer_image(model, cv2.resize(data.astronaut(), (300, 300), interpolation=cv2.INTER_AREA)))
    assert small["source"] == "eyes"  # eyes ~11 px: the same answer within a few degrees (measured 0.7, 3.2)
    assert abs(small["yaw"] - full["yaw"]) < 3 and abs(small["pitch"] - full["pitch"]) < 5
    tiny = _gaze(infer_image(model, cv2.resize(data.astronaut(), (192, 192), interpolation=cv2.INTER_AREA)))
    assert tiny["source"] == "head" and tiny["yaw"] == tiny["head_yaw"]  # eyes ~7 px: too coarse to use


def test_gaze_faces_are_tracked_and_counted(registry: ModelRegistry, tmp_path: Path) -> None:
    """With tracking, each face gets a ``tracker_id`` (on ``face``, where the hosted API has it), and lines count it."""
    import jsonschema

    from vidinfer.core.tracking import AnalysisOptions, analyse
    from vidinfer.results_schema import results_schema

    face = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    photos = []
    for step in range(6):  # her face (~55 px wide) slides right 50 px a second, across x = 250
        canvas = np.full((480, 640, 3), 90, dtype=np.uint8)
        canvas[100:356, 20 + 50 * step:276 + 50 * step] = face
        photos.append(canvas)
    video = photos_video(tmp_path / "faces.mp4", photos, fps=4)
    results = run_inference(str(video), resolve_runs(registry, [ModelRequest("gaze", "gaze")]), Fraction(2))
    out = analyse(results.results_json, AnalysisOptions.parse(tracker="bytetrack", lines=[[[250, 0], [250, 480]]]))
    faces = [p["face"] for entry in out["gaze"] for p in entry["predictions"]]
    assert len(faces) == 12 and all(f["tracker_id"] == 1 for f in faces)
    assert all("tracker_id" not in p for entry in out["gaze"] for p in entry["predictions"])  # on the face only
    (track,) = out["tracks"]["gaze"]
    assert track["class"] == "face" and track["frames_seen"] == 12
    (line,) = out["counts"]["gaze"]["lines"]
    assert line["total_in"] + line["total_out"] == 1
    jsonschema.validate(out, results_schema())


def test_gaze_finds_no_face_on_a_coffee_table(registry: ModelRegistry) -> None:
    assert infer_image(registry.load("gaze"), data.coffee())["predictions"] == []


def test_gaze_over_a_1080p_video_answers_in_source_pixels(registry: ModelRegistry, tmp_path: Path) -> None:
    frame = np.full((1080, 1920, 3), 80, dtype=np.uint8)
    frame[300:812, 1200:1712] = data.astronaut()  # a face of ~105 px, right of centre
    video = photos_video(tmp_path / "hd.mp4", [frame], size=(1920, 1080), fps=2)
    results = run_inference(str(video), resolve_runs(registry, [ModelRequest("gaze", "gaze")]), Fraction(2))
    entries = results.results_json["gaze"]
    assert len(entries) == 2
    for entry in entries:
        assert set(entry) == {"time", "image", "predictions", "time_face_det", "time_gaze_det"}
        # the hosted split of the frame's time: face detection, then landmarks + head pose + irises
        assert isinstance(entry["time_face_det"], float) and isinstance(entry["time_gaze_det"], float)
        assert entry["time_face_det"] > 0 and entry["time_gaze_det"] > 0
        face, yaw, pitch = _face(entry)
        assert set(face) == {"x", "y", "width", "height", "confidence", "class", "class_id", "class_confidence",
                             "landmarks"}
        assert face["class_confidence"] is None  # as hosted: the face detector has one score
        (pred,) = entry["predictions"]
        assert set(pred) == {"face", "yaw", "pitch", "head_yaw", "head_pitch", "gaze_source"}
        assert pred["gaze_source"] == "eyes" and all(isinstance(pred[k], float) for k in ("head_yaw", "head_pitch"))
        assert len(face["landmarks"]) == 6
        assert abs(face["x"] - (1200 + 225)) < 25 and abs(face["y"] - (300 + 120)) < 25
        assert 80 < face["width"] < 130
        assert abs(yaw) < 10 and abs(pitch) < 10

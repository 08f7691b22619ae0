"""The ONNX YOLO adapter on tiny graphs that emit each export layout with planted, known values.

Geometry used throughout: a 1920x1080 source is resized by the pipeline to
640x360 (scale 3). A fixed 640x640 export pads it to 640x640 (140 rows top and
bottom); a dynamic-shape export pads only to the stride: 640x384 (12 rows).
So input pixel (x, y) is source pixel (3x, 3(y - top)).
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from onnx_graphs import (
    anchors_output,
    channel_mean_classifier,
    constant_model,
    input_size_box_model,
    rows_output,
    ultralytics_metadata,
)

from vidinfer.core.model import PARALLEL_BATCHES, InferenceParams, Model, session_threads
from vidinfer.core.pipeline import ModelRun, run_video
from vidinfer.core.results import Classification, Detections
from vidinfer.core.video import probe
from vidinfer.errors import ModelError
from vidinfer.models import onnx_session, onnx_yolo
from vidinfer.models.onnx_yolo import COCO_KEYPOINTS, ExportMetadata, load_onnx_model
from vidinfer.wire import results_to_json

SOURCE = (1920, 1080)
STATIC, DYNAMIC = (640, 640), None
TOP = {STATIC: 140, DYNAMIC: 12}
NAMES = ("person", "car", "dog")
#: the planted car: cx, cy, w, h in input pixels -> xyxy (275, 290, 365, 350)
CAR = [320, 320, 90, 60]


def source_box(x1: float, y1: float, x2: float, y2: float, top: int, scale: float = 3.0) -> list[float]:
    return [x1 * scale, (y1 - top) * scale, x2 * scale, (y2 - top) * scale]


def frames(model: Model, count: int = 1, source: tuple[int, int] = SOURCE) -> list[np.ndarray]:
    width, height = model.image_size(source)
    return [np.full((height, width, 3), 90, np.uint8) for _ in range(count)]


def detect(model: Model, count: int = 1, **params: object) -> list[Detections]:
    out = model.predict(frames(model, count), SOURCE, InferenceParams(**params))
    assert all(isinstance(d, Detections) for d in out)
    return out  # type: ignore[return-value]


# -- detect, v8/11 anchors head -----------------------------------------------------------------------
def detect_v8(tmp_path: Path, *, batch: int | None = None, hw: tuple[int, int] | None = STATIC) -> Model:
    planted = {
        0: [*CAR, 0.0, 0.9, 0.0],  # car 0.9
        1: [322, 321, 90, 60, 0.0, 0.8, 0.0],  # a duplicate car: NMS removes it
        2: [*CAR, 0.0, 0.0, 0.7],  # a dog on the same box: class-wise NMS keeps it
        3: [100, 300, 40, 40, 0.2, 0.0, 0.0],  # a weak person
    }
    meta = ultralytics_metadata("detect", NAMES, batch=batch or 1)
    return load_onnx_model(constant_model(tmp_path / "det.onnx", [anchors_output(7, 16, planted)], batch=batch,
                                          hw=hw, metadata=meta))


@pytest.mark.parametrize("hw", [STATIC, DYNAMIC], ids=["static640", "dynamic_hw"])
def test_detect_box_comes_back_in_source_pixels(tmp_path: Path, hw: tuple[int, int] | None) -> None:
    model = detect_v8(tmp_path, hw=hw)
    assert model.image_size(SOURCE) == (640, 360)
    (det,) = detect(model)
    assert det.class_name == ["car", "dog"]
    np.testing.assert_allclose(det.confidence, [0.9, 0.7], rtol=1e-6)
    expected = source_box(275, 290, 365, 350, TOP[hw])
    np.testing.assert_allclose(det.xyxy, [expected, expected], atol=1e-3)


@pytest.mark.parametrize(
    ("params", "classes"),
    [
        ({}, ["car", "dog"]),
        ({"confidence": 0.1}, ["car", "dog", "person"]),
        ({"classes": ("dog",)}, ["dog"]),
        ({"classes": ("person",), "confidence": 0.1}, ["person"]),
        ({"max_detections": 1}, ["car"]),
        ({"iou": 0.99}, ["car", "car", "dog"]),  # overlap below the IoU threshold: the duplicate stays
    ],
)
def test_detect_params(tmp_path: Path, params: dict[str, object], classes: list[str]) -> None:
    (det,) = detect(detect_v8(tmp_path), **params)
    assert det.class_name == classes
    assert np.all(np.diff(det.confidence) <= 0), "sorted by score"


@pytest.mark.parametrize("batch", [None, 1, 4], ids=["dynamic_batch", "fixed_batch1", "fixed_batch4"])
def test_detect_any_batch_layout_gives_one_result_per_image(tmp_path: Path, batch: int | None) -> None:
    out = detect(detect_v8(tmp_path, batch=batch), count=3)
    assert len(out) == 3
    for det in out:
        assert det.class_name == ["car", "dog"]
        np.testing.assert_allclose(det.xyxy, out[0].xyxy)


def test_detect_without_metadata_names_classes_by_index(tmp_path: Path) -> None:
    output = anchors_output(6, 8400, {7: [*CAR, 0.1, 0.95]})
    model = load_onnx_model(constant_model(tmp_path / "plain.onnx", [output]))
    assert model.info.classes == ("0", "1")
    (det,) = detect(model)
    assert det.class_name == ["1"]
    np.testing.assert_allclose(det.xyxy[0], source_box(275, 290, 365, 350, TOP[STATIC]), atol=1e-3)


# -- preprocessing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("hw", "expected"), [
    (STATIC, source_box(160, 160, 480, 480, TOP[STATIC])),  # the network saw 640x640
    (DYNAMIC, source_box(160, 96, 480, 288, TOP[DYNAMIC])),  # it saw 640x384: the rectangular letterbox
], ids=["static640", "dynamic_hw"])
def test_network_input_is_the_letterbox_canvas(tmp_path: Path, hw: tuple[int, int] | None,
                                               expected: list[float]) -> None:
    meta = ultralytics_metadata("detect", ["thing"], end2end=True)
    model = load_onnx_model(input_size_box_model(tmp_path / "size.onnx", hw=hw, metadata=meta))
    (det,) = detect(model)
    np.testing.assert_allclose(det.xyxy[0], expected, atol=1e-3)


def test_letterbox_pads_grey_centred_and_scales_to_unit_range() -> None:
    image = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    blob, (placement,) = onnx_yolo._letterbox([image], (640, 384), SOURCE)
    assert blob.shape == (1, 3, 384, 640) and blob.dtype == np.float32
    assert (placement.left, placement.top, placement.scale_x, placement.scale_y) == (0, 12, 3.0, 3.0)
    np.testing.assert_allclose(blob[0, :, :12], 114 / 255, rtol=1e-6)
    np.testing.assert_allclose(blob[0, :, 372:], 114 / 255, rtol=1e-6)
    np.testing.assert_allclose(blob[0, :, 12:372], image.transpose(2, 0, 1) / 255, rtol=1e-6)


def test_images_not_at_image_size_are_resized(tmp_path: Path) -> None:
    model = detect_v8(tmp_path)
    (det,) = model.predict([np.zeros((1080, 1920, 3), np.uint8)], SOURCE, InferenceParams())
    np.testing.assert_allclose(det.xyxy[0], source_box(275, 290, 365, 350, TOP[STATIC]), atol=1e-3)


# -- end-to-end [N, 300, 6] ---------------------------------------------------------------------------
def test_end2end_rows_need_no_nms(tmp_path: Path) -> None:
    rows = rows_output(300, 6, {
        0: [275, 290, 365, 350, 0.9, 1],
        1: [276, 290, 366, 350, 0.85, 1],  # end-to-end heads already deduplicate: kept as given
        2: [10, 150, 50, 190, 0.3, 2],
    })
    meta = ultralytics_metadata("detect", NAMES, end2end=True)
    model = load_onnx_model(constant_model(tmp_path / "e2e.onnx", [rows], metadata=meta))
    assert "end2end" in model.info.description
    (det,) = detect(model)
    assert det.class_name == ["car", "car"]
    np.testing.assert_allclose(det.xyxy[0], source_box(275, 290, 365, 350, TOP[STATIC]), atol=1e-3)
    (low,) = detect(model, confidence=0.1, classes=("dog",))
    np.testing.assert_allclose(low.xyxy[0], source_box(10, 150, 50, 190, TOP[STATIC]), atol=1e-3)


def test_nms_export_that_says_end2end_false_is_read_by_its_shape(tmp_path: Path) -> None:
    """`yolo export nms=True` writes end2end=False in the metadata but emits [N, 300, 6] rows."""
    rows = rows_output(300, 6, {0: [275, 290, 365, 350, 0.9, 1]})
    meta = ultralytics_metadata("detect", NAMES, end2end=False)
    (det,) = detect(load_onnx_model(constant_model(tmp_path / "nms.onnx", [rows], metadata=meta)))
    assert det.class_name == ["car"]
    np.testing.assert_allclose(det.xyxy[0], source_box(275, 290, 365, 350, TOP[STATIC]), atol=1e-3)


def test_end2end_pose_keeps_its_keypoint_columns(tmp_path: Path) -> None:
    rows = rows_output(300, 12, {0: [275, 290, 365, 350, 0.9, 0, 300, 300, 0.8, 310, 320, 0.7]})
    meta = ultralytics_metadata("pose", ["person"], kpt_shape=(2, 3), end2end=True)
    (det,) = detect(load_onnx_model(constant_model(tmp_path / "e2e-pose.onnx", [rows], metadata=meta)))
    top = TOP[STATIC]
    np.testing.assert_allclose(det.keypoints[0], [[900, (300 - top) * 3, 0.8], [930, (320 - top) * 3, 0.7]],
                               atol=1e-3)


@pytest.mark.parametrize("head", ["anchors", "end2end"])
def test_obb_reports_the_box_enclosing_the_rotated_one(tmp_path: Path, head: str) -> None:
    quarter_turn = np.pi / 2  # a 100x20 box turned upright encloses x 310-330, y 270-370
    if head == "anchors":
        output = anchors_output(6, 16, {0: [320, 320, 100, 20, 0.9, quarter_turn],
                                        1: [321, 320, 100, 20, 0.8, quarter_turn]})  # its duplicate
    else:
        output = rows_output(300, 7, {0: [320, 320, 100, 20, 0.9, 0, quarter_turn]})
    meta = ultralytics_metadata("obb", ["ship"], end2end=head == "end2end")
    (det,) = detect(load_onnx_model(constant_model(tmp_path / "obb.onnx", [output], metadata=meta)))
    assert det.class_name == ["ship"]
    np.testing.assert_allclose(det.xyxy[0], source_box(310, 270, 330, 370, TOP[STATIC]), atol=1e-3)


# -- legacy YOLOv5 [N, 25200, 85] ---------------------------------------------------------------------
def test_yolov5_without_metadata(tmp_path: Path) -> None:
    # a 320x320 YOLOv5 export: 3 anchors x (40^2 + 20^2 + 10^2) = 6300 rows of box, objectness, 80 scores
    rows = np.zeros((1, 6300, 85), np.float32)
    rows[0, 5, :5], rows[0, 5, 5 + 7] = [160, 160, 64, 32, 0.9], 0.8  # class 7 at 0.72
    rows[0, 6, :5], rows[0, 6, 5 + 7] = [161, 160, 64, 32, 0.9], 0.7  # its duplicate
    rows[0, 7, :5], rows[0, 7, 5 + 2] = [60, 100, 20, 20, 0.3], 0.9  # objectness too low
    model = load_onnx_model(constant_model(tmp_path / "yolov5s.onnx", [rows], hw=(320, 320)))
    assert model.info.task == "object-detection" and model.info.classes == tuple(str(i) for i in range(80))
    assert model.image_size(SOURCE) == (320, 180)
    (det,) = detect(model)
    assert det.class_name == ["7"]
    np.testing.assert_allclose(det.confidence, [0.72], rtol=1e-5)
    np.testing.assert_allclose(det.xyxy[0], source_box(128, 144, 192, 176, top=70, scale=6.0), atol=1e-3)


# -- segmentation -------------------------------------------------------------------------------------
def segment_model(tmp_path: Path) -> Model:
    protos = np.full((1, 32, 160, 160), -1.0, np.float32)
    protos[0, 1:] = 0
    protos[0, 0, 70:85, 70:90] = 1.0  # input pixels x 280-360, y 280-340
    coefficients = [5.0] + [0.0] * 31
    planted = {
        0: [320, 310, 100, 80, 0.9, *coefficients],  # box (270, 270, 370, 350) around the mask
        1: [150, 200, 40, 40, 0.8] + [0.0] * 32,  # an empty mask: dropped, as Ultralytics does
    }
    meta = ultralytics_metadata("segment", ["blob"])
    return load_onnx_model(constant_model(tmp_path / "seg.onnx", [anchors_output(37, 16, planted), protos],
                                          metadata=meta))


def test_segment_polygon_is_the_mask_in_source_pixels(tmp_path: Path) -> None:
    model = segment_model(tmp_path)
    assert model.info.task == "instance-segmentation"
    (det,) = detect(model)
    assert len(det) == 1 and det.polygons is not None
    polygon = det.polygons[0]
    x1, y1, x2, y2 = det.xyxy[0]
    assert np.all((polygon[:, 0] >= x1) & (polygon[:, 0] <= x2) & (polygon[:, 1] >= y1) & (polygon[:, 1] <= y2))
    top = TOP[STATIC]
    np.testing.assert_allclose([*polygon.min(axis=0), *polygon.max(axis=0)],
                               source_box(280, 280, 360, 340, top), atol=2 * 3)


# -- pose ---------------------------------------------------------------------------------------------
def pose_model(tmp_path: Path) -> Model:
    keypoints = [[300 + 2 * k, 250 + 3 * k, 0.5 + k / 100] for k in range(17)]
    keypoints[16] = [-10, 250, 0.2]  # off the image: clipped to the frame
    planted = {0: [320, 320, 100, 200, 0.9, *np.ravel(keypoints)]}
    meta = ultralytics_metadata("pose", ["person"], kpt_shape=(17, 3))
    return load_onnx_model(constant_model(tmp_path / "pose.onnx", [anchors_output(56, 16, planted)], metadata=meta))


def test_pose_keypoints_map_back_with_coco_names(tmp_path: Path) -> None:
    model = pose_model(tmp_path)
    assert model.info.task == "keypoint-detection"
    (det,) = detect(model)
    assert det.keypoints is not None and det.keypoints.shape == (1, 17, 3)
    assert det.keypoint_names == list(COCO_KEYPOINTS)
    top = TOP[STATIC]
    k = np.arange(16)
    np.testing.assert_allclose(det.keypoints[0, :16, 0], (300 + 2 * k) * 3, atol=1e-3)
    np.testing.assert_allclose(det.keypoints[0, :16, 1], (250 + 3 * k - top) * 3, atol=1e-3)
    np.testing.assert_allclose(det.keypoints[0, :16, 2], 0.5 + k / 100, atol=1e-6)
    np.testing.assert_allclose(det.keypoints[0, 16], [0, (250 - top) * 3, 0.2], atol=1e-3)


def test_pose_with_two_value_keypoints_names_them_by_index(tmp_path: Path) -> None:
    planted = {0: [*CAR, 0.9, 330, 330, 340, 340, 350, 350, 360, 360]}
    meta = ultralytics_metadata("pose", ["hand"], kpt_shape=(4, 2))
    model = load_onnx_model(constant_model(tmp_path / "pose4.onnx", [anchors_output(13, 16, planted)],
                                           metadata=meta))
    (det,) = detect(model)
    assert det.keypoint_names == ["0", "1", "2", "3"]
    np.testing.assert_allclose(det.keypoints[0, :, 2], 1.0)


# -- classification -----------------------------------------------------------------------------------
def classify(model: Model, images: list[np.ndarray]) -> list[Classification]:
    out = model.predict(images, SOURCE, InferenceParams())
    assert all(isinstance(c, Classification) for c in out)
    return out  # type: ignore[return-value]


def test_classify_probabilities_and_metadata_names(tmp_path: Path) -> None:
    meta = ultralytics_metadata("classify", ["a", "b", "c", "d"], imgsz=(224, 224))
    model = load_onnx_model(constant_model(tmp_path / "cls.onnx", [np.array([[0.1, 0.6, 0.2, 0.1]])],
                                           hw=(224, 224), metadata=meta))
    assert model.info.task == "classification" and model.info.classes == ("a", "b", "c", "d")
    assert model.image_size(SOURCE) == (398, 224)  # the short side to 224; predict centre-crops
    (result,) = classify(model, frames(model))
    np.testing.assert_allclose(result.confidence, [0.1, 0.6, 0.2, 0.1], rtol=1e-6)


def test_classify_logits_get_a_softmax(tmp_path: Path) -> None:
    model = load_onnx_model(constant_model(tmp_path / "logits.onnx", [np.array([[2.0, 0.5, -1.0]])], hw=(224, 224)))
    (result,) = classify(model, frames(model))
    expected = np.exp([2.0, 0.5, -1.0]) / np.exp([2.0, 0.5, -1.0]).sum()
    assert result.class_names == ["0", "1", "2"]
    np.testing.assert_allclose(result.confidence, expected, rtol=1e-5)


@pytest.mark.parametrize("batch", [None, 1], ids=["dynamic_batch", "fixed_batch1"])
def test_classify_centre_crops_rgb_in_batch_order(tmp_path: Path, batch: int | None) -> None:
    meta = ultralytics_metadata("classify", ["red", "green", "blue"], imgsz=(224, 224), batch=batch or 1)
    model = load_onnx_model(channel_mean_classifier(tmp_path / "mean.onnx", batch=batch, metadata=meta))
    width, height = model.image_size(SOURCE)
    centre_red = np.zeros((height, width, 3), np.uint8)
    centre_red[..., 2] = 255
    left = (width - 224) // 2
    centre_red[:, left:left + 224] = (255, 0, 0)  # only the centre crop is red
    green = np.zeros_like(centre_red)
    green[..., 1] = 255
    blue = np.zeros_like(centre_red)
    blue[..., 2] = 255
    results = classify(model, [centre_red, green, blue])
    assert [r.class_names[int(np.argmax(r.confidence))] for r in results] == ["red", "green", "blue"]
    np.testing.assert_allclose(results[0].confidence, [1.0, 0.0, 0.0], atol=1e-6)


# -- metadata, errors, runtime ------------------------------------------------------------------------
def test_metadata_is_parsed_without_eval() -> None:
    meta = ExportMetadata.parse(ultralytics_metadata("pose", ["person"], imgsz=(480, 640), kpt_shape=(17, 3),
                                                     end2end=True, stride=64, batch=4))
    assert (meta.task, meta.names, meta.imgsz, meta.stride) == ("pose", ("person",), (480, 640), 64)
    assert (meta.end2end, meta.kpt_shape, meta.batch) == (True, (17, 3), 4)
    hostile = ExportMetadata.parse({"names": "__import__('os').getcwd()", "imgsz": "640"})
    assert hostile.names is None and hostile.imgsz == (640, 640)
    assert ExportMetadata.parse({"names": "{0: 'a', 2: 'c'}"}).names == ("a", "1", "c")


@pytest.mark.parametrize(
    ("outputs", "metadata", "shape_named"),
    [
        ([np.zeros((1, 4, 100))], None, ", 4, 100]"),  # no class column in any reading
        ([np.zeros((1, 10, 16))], ultralytics_metadata("detect", NAMES), ", 10, 16]"),  # 3 names, 6 classes
        ([np.zeros((1, 2, 3, 4))], None, ", 2, 3, 4]"),  # only a 4-D output
        ([np.zeros((1, 56, 16))], ultralytics_metadata("pose", ["person"]), ", 56, 16]"),  # no kpt_shape
        ([np.zeros((1, 37, 16))], ultralytics_metadata("segment", ["blob"]), ", 37, 16]"),  # no prototypes
        ([np.zeros((1, 3))], ultralytics_metadata("detect", NAMES), ", 3]"),  # 2-D output for a detector
        ([np.zeros((1, 84, 16))], ultralytics_metadata("depth", ["x"]), ", 84, 16]"),  # unknown task
    ],
    ids=["no_classes", "names_mismatch", "only_4d", "pose_no_kpt_shape", "seg_no_protos", "2d_detect", "task"],
)
def test_unknown_layouts_are_refused_naming_the_shapes(tmp_path: Path, outputs: list[np.ndarray],
                                                       metadata: dict[str, str] | None, shape_named: str) -> None:
    path = constant_model(tmp_path / "odd.onnx", outputs, metadata=metadata)
    with pytest.raises(ModelError) as caught:
        load_onnx_model(path)
    assert caught.value.code == "unsupported_model"
    assert shape_named in caught.value.message


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not a model")
    with pytest.raises(ModelError) as caught:
        load_onnx_model(path)
    assert caught.value.code == "invalid_model_file"
    with pytest.raises(ModelError) as missing:
        load_onnx_model(tmp_path / "missing.onnx")
    assert missing.value.code == "unknown_model"


def test_session_settings_info_and_providers(tmp_path: Path) -> None:
    model = load_onnx_model(constant_model(tmp_path / "yolo-mine.onnx", [anchors_output(7, 16, {})],
                                           metadata=ultralytics_metadata("detect", NAMES)),
                            threads=1, providers=("NoSuchExecutionProvider", "CPUExecutionProvider"))
    session = model._runner.session  # type: ignore[attr-defined]
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_providers() == ["CPUExecutionProvider"]
    info = model.info
    assert (info.name, info.task, info.classes, info.input_size) == ("yolo-mine", "object-detection", NAMES,
                                                                     (640, 640))
    assert info.source.endswith("yolo-mine.onnx") and info.license == "user-supplied"
    assert onnx_session.choose_providers(("NoSuchExecutionProvider",)) == ["CPUExecutionProvider"]


def test_by_default_each_run_gets_its_share_of_the_cores(tmp_path: Path) -> None:
    """The pipeline has PARALLEL_BATCHES runs in a session at once; together they use every core."""
    model = load_onnx_model(constant_model(tmp_path / "auto.onnx", [anchors_output(7, 16, {})]))
    threads = model._runner.session.get_session_options().intra_op_num_threads  # type: ignore[attr-defined]
    cores = os.cpu_count() or 1
    assert threads == max(1, cores // PARALLEL_BATCHES) == session_threads()
    assert threads * PARALLEL_BATCHES <= max(cores, PARALLEL_BATCHES)


def test_predict_is_reentrant(tmp_path: Path) -> None:
    model = segment_model(tmp_path)
    expected = detect(model)[0]
    results: list[Detections] = []

    def work() -> None:
        for _ in range(5):
            results.extend(detect(model, count=2))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 30
    for det in results:
        np.testing.assert_allclose(det.xyxy, expected.xyxy)
        np.testing.assert_allclose(det.polygons[0], expected.polygons[0])  # type: ignore[index]


# -- through the real pipeline ------------------------------------------------------------------------
def tiny_video(path: Path, size: tuple[int, int] = (320, 240), fps: int = 30, seconds: int = 1) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(fps * seconds):
            image = np.full((size[1], size[0], 3), (i * 8) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_pipeline_gives_points_and_keypoints_on_the_wire(tmp_path: Path) -> None:
    info = probe(str(tiny_video(tmp_path / "tiny.mp4")))
    runs = [ModelRun("seg", segment_model(tmp_path)), ModelRun("pose", pose_model(tmp_path))]
    result = run_video(info, runs, Fraction(5))
    wire = results_to_json(result)
    assert len(wire["frame_offset"]) == 5
    for entry in wire["seg"]:
        (pred,) = entry["predictions"]
        # 320x240 -> 640x480 (scale 0.5), 80 rows of padding: the mask x 280-360, y 280-340 is source 140-180, 100-130
        assert 138 <= min(p["x"] for p in pred["points"]) and max(p["x"] for p in pred["points"]) <= 182
        assert 98 <= min(p["y"] for p in pred["points"]) and max(p["y"] for p in pred["points"]) <= 132
        assert entry["image"] == {"width": 320, "height": 240}
    for entry in wire["pose"]:
        (pred,) = entry["predictions"]
        assert [k["class"] for k in pred["keypoints"]] == list(COCO_KEYPOINTS)
        assert pred["keypoints"][0]["x"] == 150.0 and pred["keypoints"][0]["y"] == 85.0

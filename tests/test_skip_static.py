"""``skip_static``: samples that did not change are not inferred, and say whose predictions they repeat.

The videos are a fixed, noisy scene (a fixed camera's sensor noise) where a bright square may come in and
leave; the model counts the images it is given, so the test sees which samples were really inferred.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import jsonschema
import numpy as np
import pytest

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.core.pipeline import ModelRun, run_video
from vidinfer.core.results import Detections
from vidinfer.core.sampling import check_skip_static
from vidinfer.core.video import probe
from vidinfer.errors import InvalidInput
from vidinfer.models.base import fit_within
from vidinfer.results_schema import results_schema
from vidinfer.wire import results_to_json

FPS = 10  # the video's frame rate; samples are taken at 5 per second: sample k is frame 2k
SIZE = (160, 96)


class BrightBox:
    """A detector that boxes the pixels brighter than 200 (the square), and counts the images it sees."""

    def __init__(self) -> None:
        self.info = ModelInfo("bright", "object-detection", ("square",), (160, 96), "test")
        self.seen = 0

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        return fit_within(source_size, (160, 96))

    def predict(self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams,
                ) -> list[Detections]:
        self.seen += len(images)
        out = []
        for image in images:
            ys, xs = np.nonzero(image.mean(axis=2) > 200)
            if len(xs):
                out.append(Detections([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [0.9], [0], ["square"]))
            else:
                out.append(Detections.empty())
        return out


def make_scene(path: Path, frames: int, square: range = range(0)) -> Path:
    """A textured background with fresh noise on every frame; a white square on the frames in ``square``."""
    rng = np.random.default_rng(7)
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    background = (60 + 40 * np.sin(xx / 9.0) + 30 * np.cos(yy / 7.0)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            gray = background + rng.normal(0, 2.0, background.shape)
            if i in square:
                gray[30:70, 50:100] = 240
            rgb = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def still(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(tmp_path_factory.mktemp("static") / "still.mp4", 40)


@pytest.fixture(scope="module")
def visit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The square is in frames 20-29: samples 10-14."""
    return make_scene(tmp_path_factory.mktemp("static") / "visit.mp4", 40, range(20, 30))


def _run(path: Path, skip_static: float | None, **kwargs) -> tuple[BrightBox, object]:  # noqa: ANN003
    model = BrightBox()
    result = run_video(probe(str(path)), [ModelRun("m", model)], Fraction(5), skip_static=skip_static,
                       batch_size=3, **kwargs)
    return model, result


def test_a_static_video_infers_its_first_sample_only(still: Path) -> None:
    model, result = _run(still, 2.0)
    assert len(result) == 20 and model.seen == 1
    entries = result.predictions["m"]
    assert entries[0].reused_from is None
    assert [e.reused_from for e in entries[1:]] == [0] * 19
    assert all(e.value is entries[0].value and e.inference_time == 0.0 for e in entries[1:])
    assert (result.stats["samples_inferred"], result.stats["samples_reused"]) == (1, 19)
    data = results_to_json(result)
    assert [e.get("reused_from") for e in data["m"]] == [None] + [0] * 19
    jsonschema.validate(data, results_schema())


def test_a_change_is_inferred_where_it_happens_and_where_it_ends(visit: Path) -> None:
    model, result = _run(visit, 2.0, overlap=True)
    reused = [e.reused_from for e in result.predictions["m"]]
    assert reused == [None] + [0] * 9 + [None] + [10] * 4 + [None] + [15] * 4
    assert model.seen == 3
    found = [len(e.value) for e in result.predictions["m"]]
    assert found == [0] * 10 + [1] * 5 + [0] * 5  # every sample says what a plain run says
    plain_model, plain = _run(visit, None)
    assert plain_model.seen == 20
    assert [len(e.value) for e in plain.predictions["m"]] == found


def test_off_gives_the_plain_results(visit: Path) -> None:
    _, plain = _run(visit, None)
    assert all(e.reused_from is None for e in plain.predictions["m"])
    assert "samples_reused" not in plain.stats
    assert "reused_from" not in json.dumps(results_to_json(plain))
    _, everything = _run(visit, 0.0001)  # a threshold nothing stays under: every sample inferred
    assert [e.reused_from for e in everything.predictions["m"]] == [None] * 20
    untimed = [[{k: v for k, v in e.items() if k != "time"} for e in results_to_json(r)["m"]]
               for r in (plain, everything)]
    assert untimed[0] == untimed[1]


def test_a_chunk_infers_its_first_sample_and_names_samples_by_their_job_index(still: Path) -> None:
    model, result = _run(still, 2.0, k_range=(6, 12))
    assert len(result) == 6 and model.seen == 1
    assert [e.reused_from for e in result.predictions["m"]] == [None] + [6] * 5


@pytest.mark.parametrize("value", [0, -1, 255.5, float("nan"), "much"])
def test_a_bad_threshold_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput) as err:
        check_skip_static(value)  # type: ignore[arg-type]
    assert err.value.code == "invalid_skip_static" and err.value.exit_code == 2 and err.value.status_code == 400
    assert check_skip_static(255) == 255.0 and check_skip_static(None) is None


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIDINFER_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "vidinfer.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_cli_option(visit: Path, tmp_path: Path) -> None:
    from onnx_graphs import input_size_box_model, ultralytics_metadata

    model = input_size_box_model(tmp_path / "box.onnx", metadata=ultralytics_metadata("detect", ["thing"],
                                                                                       end2end=True))
    out = tmp_path / "r.json"
    done = _cli("infer", str(visit), "-m", str(model), "--fps", "5", "-q", "--skip-static", "2", "-o", str(out),
                data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(3 inferred, 17 reused)" in done.stdout
    results = json.loads(out.read_text())
    assert [e.get("reused_from") for e in results["box"]][:3] == [None, 0, 0]
    bad = _cli("infer", str(visit), "-m", str(model), "--skip-static", "300", data_dir=tmp_path)
    assert bad.returncode == 2 and "skip_static must be above 0 and at most 255" in bad.stderr, bad.stderr


def test_the_api_field_is_kept_with_the_job_and_applied_by_the_worker(visit: Path, tmp_path: Path) -> None:
    import httpx
    from onnx_graphs import input_size_box_model, ultralytics_metadata
    from server import Server

    model = input_size_box_model(tmp_path / "box.onnx", metadata=ultralytics_metadata("detect", ["thing"],
                                                                                       end2end=True))
    data = tmp_path / "svc"
    added = _cli("models", "add", "box", str(model), data_dir=data)
    assert added.returncode == 0, added.stderr
    with Server(data, workers=1) as server:
        key = server.key("acme")
        url = server.upload(key, visit)
        models = [{"model_id": "box", "model_version": "1"}]
        for bad in (0, 256, -2):
            answer = server.submit(key, url, models, infer_fps=5, skip_static=bad)
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_skip_static", answer.text
        answer = server.submit(key, url, models, infer_fps=5, skip_static=2)
        assert answer.status_code == 200, answer.text
        status = server.wait(key, answer.json()["job_id"])
        assert status["status"] == 0, status
        results = httpx.get(status["output_signed_url"]).json()
        reused = [e.get("reused_from") for e in results["box"]]
        assert reused == [None] + [0] * 9 + [None] + [10] * 4 + [None] + [15] * 4
        jsonschema.validate(results, httpx.get(f"{server.url}/results.schema.json").json())
        plain = server.wait(key, server.submit(key, url, models, infer_fps=5).json()["job_id"])
        assert "reused_from" not in httpx.get(plain["output_signed_url"]).text
        openapi = httpx.get(f"{server.url}/openapi.json").json()
        field = openapi["components"]["schemas"]["VideoInferIn"]["properties"]["skip_static"]
        assert "reused_from" in json.dumps(field)


class FailsOnTheSquare(BrightBox):
    """Fails on any frame with the square in it: the inferred sample's entry is null, and so are the reused."""

    def predict(self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams,
                ) -> list[Detections]:
        if any((image.mean(axis=2) > 200).any() for image in images):
            raise RuntimeError("no squares here")
        return super().predict(images, source_size, params)


def test_a_reused_sample_of_a_failed_one_is_null_and_counted_once(visit: Path) -> None:
    model = FailsOnTheSquare()
    result = run_video(probe(str(visit)), [ModelRun("m", model), ModelRun("b", BrightBox())], Fraction(5),
                       skip_static=2.0, batch_size=3)
    entries = result.predictions["m"]
    assert [e is None for e in entries] == [False] * 10 + [True] * 5 + [False] * 5
    assert [e.reused_from for e in result.predictions["b"][10:15]] == [None, 10, 10, 10, 10]
    assert result.failed_frames == 1 and sum("failed on frame" in w for w in result.warnings) == 1

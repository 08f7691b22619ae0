"""A job split into chunks gives the single pass's results, value for value."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from onnx_graphs import channel_mean_classifier
from test_sampling import VIDEOS

from vidinfer.core.chunks import merge_results, plan_chunks
from vidinfer.core.pipeline import ModelRun, expected_samples, run_video
from vidinfer.core.video import probe
from vidinfer.models.onnx_yolo import load_onnx_model
from vidinfer.wire import results_to_json


def test_plan_chunks_covers_every_sample_once() -> None:
    for total in (0, 1, 7, 60, 61, 599):
        for fps in (Fraction(1), Fraction(5), Fraction(30000, 1001), Fraction(1, 2)):
            for seconds in (0.5, 1, 2.5, 120):
                chunks = plan_chunks(total, fps, seconds)
                covered = [k for c in chunks for k in range(c.k_first, c.k_stop)]
                assert covered == list(range(total)), (total, fps, seconds)
                assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len(plan_chunks(300, Fraction(5), 120)) == 1  # a minute at 5 fps: one chunk
    assert [c.samples for c in plan_chunks(1800, Fraction(30), 20)] == [600, 600, 600]


def test_merge_refuses_chunks_that_disagree() -> None:
    with pytest.raises(ValueError):
        merge_results([{"frame_offset": [], "time_offset": [], "a": []},
                       {"frame_offset": [], "time_offset": [], "b": []}])


def _without_timings(results: dict) -> dict:
    return {k: v if k.endswith("_offset") or not isinstance(v, list) else [{**e, "time": None} if e else e for e in v]
            for k, v in results.items()}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    path = channel_mean_classifier(tmp_path_factory.mktemp("chunks") / "mean.onnx")
    return load_onnx_model(str(path))


@pytest.mark.parametrize("name", VIDEOS)
def test_chunked_results_equal_the_single_pass(name: str, shared_video, model) -> None:  # noqa: ANN001
    info = probe(str(shared_video(name, **VIDEOS[name])))
    runs = [ModelRun("mean", model)]
    for infer_fps in (Fraction(5), Fraction(25, 2), info.fps):
        if infer_fps > info.fps:
            continue
        whole = results_to_json(run_video(info, runs, infer_fps, decode_threads=1), info)
        total = expected_samples(info, infer_fps)
        assert len(whole["frame_offset"]) == total
        for chunk_seconds in (0.2, 0.5, 1.3):
            parts = [results_to_json(run_video(info, runs, infer_fps, decode_threads=1,
                                               k_range=(c.k_first, c.k_stop)), info)
                     for c in plan_chunks(total, infer_fps, chunk_seconds)]
            assert _without_timings(merge_results(parts)) == _without_timings(whole), (name, infer_fps,
                                                                                       chunk_seconds)


def test_a_chunk_alone_reports_its_own_sample_count(shared_video, model, tmp_path: Path) -> None:  # noqa: ANN001
    info = probe(str(shared_video("30fps.mp4", **VIDEOS["30fps.mp4"])))
    result = run_video(info, [ModelRun("mean", model)], Fraction(10), decode_threads=1, k_range=(7, 12))
    assert len(result) == 5 and result.frame_offset == [21, 24, 27, 30, 33]
    assert not result.partial

"""The hosted SDK's names (vidinfer.sdk.hosted) against a real server: porting is changing an import."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server import Server

from vidinfer.sdk.client import JobFailed
from vidinfer.sdk.hosted import GazeModel, Roboflow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("hosted"), workers=1) as srv:
        srv.cli("models", "add", "acme/things/1", "--builtin", "coco")
        yield srv


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidinfer.demo import build_demo_video

    return build_demo_video(tmp_path_factory.mktemp("hosted-clip") / "clip.mp4")


def test_hosted_style_code_runs_unchanged_but_for_the_import(server: Server, clip: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rf = Roboflow(api_key=server.key("acme"), api_url=server.url)
    model = rf.workspace().project("things").version(1).model
    job_id, signed_url, expire_time = model.predict_video(str(clip), fps=1, prediction_type="batch-video",
                                                         additional_models=["gaze"])
    assert expire_time == 3600 and "/uploads/acme/" in signed_url
    results = model.poll_until_video_results(job_id, interval=0.2)
    assert len(results["frame_offset"]) == 8 and set(results) >= {"things", "gaze"}
    assert any(p["class"] == "person" for e in results["things"] for p in e["predictions"])
    assert any(e["predictions"] for e in results["gaze"])  # the astronaut's face
    bar = capsys.readouterr().err
    assert "100%" in bar and "8/8 frames" in bar
    assert model.poll_for_video_results() == results


def test_a_failed_job_raises_instead_of_passing_for_results(server: Server, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    model = GazeModel(server.key("acme"), api_url=server.url)
    job_id, _, _ = model.predict_video(str(junk), fps=1)
    with pytest.raises(JobFailed) as failed:
        model.poll_until_video_results(job_id, interval=0.2, progress=False)
    assert failed.value.job.status == 4
    with pytest.raises(ValueError, match="additional models"):
        model.predict_video(str(junk), additional_models=["sam"])

"""``vidinfer.Client`` against a real ``vidinfer serve`` on loopback (scripted answers: ``test_sdk_unit.py``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fileserver import serve_directory
from server import Server
from videos import make_video

from vidinfer import Client, JobFailed, JobStatus, ModelSpec, errors

pytestmark = pytest.mark.slow

WORKSPACE = "sdk-team"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("sdk") / "data")
    srv.cli("models", "add", f"{WORKSPACE}/people/1", "--builtin", "coco")
    with srv:
        yield srv


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.key(WORKSPACE)


@pytest.fixture
def client(server: Server, key: str) -> Iterator[Client]:
    with Client(server.url, key, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("videos") / "clip.mp4", frames=30, fps=10, size=(96, 64))


def test_upload_submit_wait_results(client: Client, video: Path) -> None:
    job_id = client.submit(video, models=[ModelSpec("coco")], infer_fps=5)
    seen: list[JobStatus] = []
    final = client.wait(job_id, interval=0.2, timeout=120, on_progress=seen.append)
    assert final.done and final.state == "done" and final.status == 0
    assert final.progress == 1.0 and final.frames_done == final.frames_total == 15
    assert final.output_signed_url and final.output_signed_url.startswith(client.api_url)
    progress = [s.progress for s in seen]
    assert progress == sorted(progress) and seen[-1] == final
    results = client.results(job_id)
    assert results["frame_offset"] == list(range(0, 30, 2))
    assert results["time_offset"] == [round(i / 5, 4) for i in range(15)]
    assert len(results["coco"]) == 15
    assert results["coco"][0]["image"] == {"width": 96, "height": 64}


def test_a_workspace_project_from_a_url(client: Client, video: Path, tmp_path: Path) -> None:
    shutil.copy(video, tmp_path / "remote.mp4")
    with serve_directory(tmp_path) as base:
        job_id = client.submit(f"{base}/remote.mp4", models=[{"model_id": "people", "model_version": 1}],
                               infer_fps=2)
        client.wait(job_id, interval=0.2, timeout=120)
    out = client.download(job_id, tmp_path / "results.json")
    assert out.stat().st_size > 0
    assert len(client.results(job_id)["people"]) == 6


def test_idempotency_key_returns_the_same_job(client: Client, video: Path) -> None:
    url = client.upload(video)
    assert "&X-Goog-Expires=" in url
    first = client.submit(url, models=["coco"], idempotency_key="retry-me")
    again = client.submit(url, models=["coco"], idempotency_key="retry-me")
    other = client.submit(url, models=["coco"])
    assert first == again != other
    listed = {job.job_id for job in client.jobs()}
    assert {first, other} <= listed
    for job_id in (first, other):
        client.wait(job_id, interval=0.2, timeout=120)


def test_cancel_a_long_job(client: Client, tmp_path: Path) -> None:
    long_video = make_video(tmp_path / "long.mp4", frames=900, fps=30, size=(64, 48))
    job_id = client.submit(long_video, models=["coco"], infer_fps=30)
    client.cancel(job_id)
    with pytest.raises(JobFailed) as info:
        client.wait(job_id, interval=0.2, timeout=60)
    assert info.value.code == "cancelled" or info.value.job.state == "cancelled"


def test_a_non_video_fails_with_a_reason(client: Client, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video " * 200)
    job_id = client.submit(junk, models=["coco"])
    with pytest.raises(JobFailed) as info:
        client.wait(job_id, interval=0.2, timeout=60)
    assert info.value.job.status >= 2 and info.value.code and info.value.reason
    with pytest.raises(JobFailed):
        client.results(job_id)


@pytest.mark.parametrize(("call", "expected"), [
    (lambda c: c.status("no-such-job"), errors.NotFound),
    (lambda c: c.submit("https://example.invalid/v.mp4", models=[ModelSpec("no-such-model")]), errors.VidinferError),
    (lambda c: c.submit("https://example.invalid/v.mp4", models=["coco"], infer_fps=0), errors.InvalidInput),
], ids=["unknown job", "unknown model", "bad fps"])
def test_bad_requests_raise_vidinfer_errors(client: Client, call, expected: type) -> None:
    with pytest.raises(expected) as info:
        call(client)
    assert 400 <= info.value.status_code < 500 and info.value.code and info.value.message


def test_a_wrong_key(server: Server) -> None:
    with Client(server.url, "not-a-key") as client, pytest.raises(errors.Unauthorized):
        client.jobs()


def test_another_workspace_sees_nothing(server: Server, client: Client, video: Path) -> None:
    job_id = client.submit(video, models=["coco"])
    with Client(server.url, server.key("strangers")) as stranger:
        with pytest.raises(errors.NotFound):
            stranger.status(job_id)
        assert job_id not in {j.job_id for j in stranger.jobs()}
    client.wait(job_id, interval=0.2, timeout=120)


def test_rate_limited_status_is_waited_out(server: Server, client: Client, video: Path) -> None:
    job_id = client.submit(video, models=["coco"])
    with Client(server.url, server.key(WORKSPACE)) as hasty:  # its own key: its own budget
        with pytest.raises(errors.RateLimited) as info:
            for _ in range(1000):
                hasty.status(job_id)
        assert info.value.retry_after >= 1 and info.value.status_code == 429
        assert hasty.wait(job_id, interval=0.05, timeout=120).done

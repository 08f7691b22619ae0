"""``vidinfer.Client`` against scripted answers (httpx.MockTransport): errors, retries, streaming.

The same client against a real ``vidinfer serve`` is in ``test_sdk.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from vidinfer import errors
from vidinfer.sdk import Client, JobFailed, JobNotDone, JobStatus, ModelSpec, WaitTimeout

API = "http://vidinfer.test"

Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """A transport answering from a list of (method, path) -> response, recording every request."""

    def __init__(self, *answers: tuple[str, str, httpx.Response | Handler]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        for i, (method, path, answer) in enumerate(self.answers):
            if method == request.method and path == request.url.path:
                del self.answers[i]
                return answer(request) if callable(answer) else answer
        raise AssertionError(f"unexpected {request.method} {request.url}")


def client_for(script: Script) -> Client:
    client = Client(API, "key-abc", transport=httpx.MockTransport(script))
    client._sleep = lambda s: slept.append(s)  # type: ignore[method-assign]
    slept.clear()
    return client


slept: list[float] = []


def err(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}}, headers=headers)


def running(progress: float = 0.5, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": 1, "state": "running", "progress": progress, "frames_done": 5,
                                     "frames_total": 10, "eta_seconds": 1.5, **extra})


DONE = {"status": 0, "state": "done", "progress": 1.0, "output_signed_url": "http://blobs.test/r.json?sig=1"}


@pytest.mark.parametrize(("status", "code", "expected", "expected_code"), [
    (400, "invalid_input", errors.InvalidInput, "invalid_input"),
    (400, "infer_fps_out_of_range", errors.InvalidInput, "infer_fps_out_of_range"),
    (401, "unauthorized", errors.Unauthorized, "unauthorized"),
    (403, "bad_signature", errors.Forbidden, "bad_signature"),
    (404, "job_not_found", errors.NotFound, "job_not_found"),
    (413, "payload_too_large", errors.PayloadTooLarge, "payload_too_large"),
    (422, "model_error", errors.ModelError, "model_error"),
    (422, "decode_error", errors.DecodeError, "decode_error"),
    (422, "something_new", errors.InvalidInput, "something_new"),
    (500, "internal_error", errors.VidinferError, "internal_error"),
    (418, "teapot", errors.VidinferError, "teapot"),
])
def test_server_errors_become_vidinfer_errors(status: int, code: str, expected: type, expected_code: str) -> None:
    client = client_for(Script(("GET", "/videoinfer", err(status, code, "a reason"))))
    with pytest.raises(expected) as info:
        client.status("j1")
    assert type(info.value) is expected
    assert info.value.code == expected_code
    assert info.value.message == "a reason"
    assert info.value.status_code == status


def test_non_json_error_keeps_the_text() -> None:
    client = client_for(Script(("GET", "/videoinfer", httpx.Response(502, text="Bad gateway"))))
    with pytest.raises(errors.VidinferError, match="Bad gateway") as info:
        client.status("j1")
    assert info.value.status_code == 502


def test_submit_sends_the_wire_shape() -> None:
    script = Script(("POST", "/videoinfer", httpx.Response(200, json={"job_id": "abc", "message": "queued"})))
    client = client_for(script)
    job = client.submit("https://videos.test/a.mp4", models=[
        ModelSpec("people", "3", inference_params={"confidence": 0.5}),
        {"model_id": "gaze", "model_version": 1, "inference_type": "gaze-detection"},
        "coco",
    ], infer_fps=2.5, notify_url="https://hooks.test/x", idempotency_key="once")
    assert job == "abc"
    request = script.requests[0]
    assert request.url.params["api_key"] == "key-abc"
    assert request.headers["Idempotency-Key"] == "once"
    assert json.loads(script.bodies[0]) == {
        "input_url": "https://videos.test/a.mp4", "infer_fps": 2.5, "notify_url": "https://hooks.test/x",
        "models": [
            {"model_id": "people", "model_version": "3", "inference_params": {"confidence": 0.5}},
            {"model_id": "gaze", "model_version": "1", "inference_type": "gaze-detection"},
            {"model_id": "coco", "model_version": "1"},  # no inference_type: the model's own task
        ]}


def test_submit_rejects_no_models_before_any_request() -> None:
    script = Script()
    with pytest.raises(errors.InvalidInput):
        client_for(script).submit("https://videos.test/a.mp4", models=[])
    assert script.requests == []


def test_upload_streams_the_file_with_its_length(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(range(256)) * 10_000)  # 2.5 MB: several chunks
    signed = "http://blobs.test/up/1?sig=x&X-Goog-Expires=900"
    script = Script(("POST", "/video_upload_signed_url", httpx.Response(200, json={"signed_url": signed})),
                    ("PUT", "/up/1", httpx.Response(200)),
                    ("POST", "/videoinfer", httpx.Response(200, json={"job_id": "j9", "message": "ok"})))
    assert client_for(script).submit(video, models=["coco"]) == "j9"
    assert json.loads(script.bodies[0]) == {"file_name": "clip.mp4"}
    put = script.requests[1]
    assert str(put.url) == signed
    assert "api_key" not in put.url.params
    assert put.headers["Content-Length"] == str(video.stat().st_size)
    assert "Transfer-Encoding" not in put.headers
    assert script.bodies[1] == video.read_bytes()
    assert json.loads(script.bodies[2])["input_url"] == signed


def test_upload_of_a_missing_file() -> None:
    with pytest.raises(errors.NotFound):
        client_for(Script()).upload("/no/such/video.mp4")


def test_status_parses_every_field() -> None:
    client = client_for(Script(("GET", "/videoinfer", running(0.25))))
    status = client.status("j1")
    assert status == JobStatus("j1", 1, "running", 0.25, 5, 10, 1.5)
    assert not status.finished


def test_status_of_a_bare_hosted_style_answer() -> None:
    client = client_for(Script(("GET", "/videoinfer", httpx.Response(200, json={"status": 0, "output_signed_url":
                                                                                   "http://b.test/r"}))))
    status = client.status("j1")
    assert (status.state, status.done, status.progress) == ("done", True, 1.0)


def test_wait_reports_progress_and_honours_retry_after() -> None:
    script = Script(("GET", "/videoinfer", running(0.1)),
                    ("GET", "/videoinfer", err(429, "rate_limited", "slow down", **{"Retry-After": "7"})),
                    ("GET", "/videoinfer", running(0.6)),
                    ("GET", "/videoinfer", httpx.Response(200, json=DONE)))
    seen: list[float] = []
    final = client_for(script).wait("j1", interval=0.5, on_progress=lambda s: seen.append(s.progress))
    assert final.done and final.output_signed_url == DONE["output_signed_url"]
    assert seen == [0.1, 0.6, 1.0]
    assert slept == [0.5, 7.0, 0.5]


def test_wait_retries_a_dropped_connection() -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    script = Script(("GET", "/videoinfer", drop), ("GET", "/videoinfer", httpx.Response(503, text="busy")),
                    ("GET", "/videoinfer", httpx.Response(200, json=DONE)))
    assert client_for(script).wait("j1", interval=0.1).done
    assert len(slept) == 2


def test_wait_raises_job_failed_with_the_servers_reason() -> None:
    failed = {"status": 3, "state": "failed", "error": {"code": "decode_error", "message": "not a video"}}
    client = client_for(Script(("GET", "/videoinfer", httpx.Response(200, json=failed))))
    with pytest.raises(JobFailed, match="not a video") as info:
        client.wait("j1")
    assert info.value.code == "decode_error"
    assert info.value.reason == "not a video"
    assert info.value.job.status == 3


def test_wait_on_a_cancelled_job() -> None:
    cancelled = {"status": 2, "state": "cancelled"}
    with pytest.raises(JobFailed) as info:
        client_for(Script(("GET", "/videoinfer", httpx.Response(200, json=cancelled)))).wait("j1")
    assert info.value.code == "cancelled"


def test_wait_times_out() -> None:
    script = Script(*[("GET", "/videoinfer", running(0.3)) for _ in range(10)])
    client = client_for(script)
    now = [0.0]
    client._clock = lambda: now[0]  # type: ignore[method-assign]
    client._sleep = lambda s: now.__setitem__(0, now[0] + s)  # type: ignore[method-assign]
    with pytest.raises(WaitTimeout, match="30%") as info:
        client.wait("j1", interval=1.0, timeout=2.5)
    assert isinstance(info.value, TimeoutError)
    assert info.value.last is not None and info.value.last.progress == 0.3


def test_results_fetches_the_signed_url_without_the_key() -> None:
    payload = {"frame_offset": [0], "time_offset": [0.0], "coco": [{"time": 0.0, "predictions": []}]}
    script = Script(("GET", "/videoinfer", httpx.Response(200, json=DONE)),
                    ("GET", "/r.json", httpx.Response(200, json=payload)))
    assert client_for(script).results("j1") == payload
    assert "api_key" not in script.requests[1].url.params


def test_results_of_a_running_job() -> None:
    with pytest.raises(JobNotDone):
        client_for(Script(("GET", "/videoinfer", running()))).results("j1")


def test_download_streams_to_a_file(tmp_path: Path) -> None:
    script = Script(("GET", "/videoinfer", httpx.Response(200, json=DONE)),
                    ("GET", "/r.json", httpx.Response(200, content=b'{"frame_offset": []}')))
    out = client_for(script).download("j1", tmp_path / "r.json")
    assert json.loads(out.read_text()) == {"frame_offset": []}


def test_cancel_and_jobs() -> None:
    script = Script(("DELETE", "/videoinfer", httpx.Response(200, json={"job_id": "j1", "status": 2,
                                                                        "state": "cancelled"})),
                    ("GET", "/videoinfers", httpx.Response(200, json={"jobs": [
                        {"job_id": "j1", "status": 2, "state": "cancelled"},
                        {"job_id": "j2", "status": 1, "state": "queued", "progress": 0}]})))
    client = client_for(script)
    assert client.cancel("j1").state == "cancelled"
    assert [(j.job_id, j.state) for j in client.jobs()] == [("j1", "cancelled"), ("j2", "queued")]
    assert script.requests[0].url.params["job_id"] == "j1"


@pytest.mark.parametrize("url", ["ftp://x", "localhost:8000", ""])
def test_bad_api_url(url: str) -> None:
    with pytest.raises(errors.InvalidInput):
        Client(url, "k")

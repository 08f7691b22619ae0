"""The service end to end: a real ``vidinfer serve`` on loopback, driven over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import jsonschema
import pytest
from server import Server
from videos import make_video

COCO = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's 8 s of real photos (astronaut, cat, coffee, motorcycle), 640x360 at 30 fps."""
    from vidinfer.demo import build_demo_video

    return build_demo_video(tmp_path_factory.mktemp("svc") / "clip.mp4")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("svc-data"), workers=1,
                env={"VIDINFER_MAX_UPLOAD_BYTES": str(3_000_000)}) as srv:
        yield srv


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.key("acme")


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_upload_infer_poll_and_download_like_the_hosted_api(server: Server, key: str, clip: Path) -> None:
    response = httpx.post(f"{server.url}/video_upload_signed_url/", params={"api_key": key},
                          json={"file_name": "../../etc/My Clip.mp4"})
    signed = response.json()["signed_url"]
    assert "&X-Goog-Expires=3600" in signed and "/uploads/acme/" in signed and "My_Clip.mp4" in signed
    httpx.put(signed, content=clip.read_bytes(), headers={"Content-Type": "application/octet-stream"}).raise_for_status()

    response = httpx.post(f"{server.url}/videoinfer/", params={"api_key": key},
                          json={"input_url": signed, "infer_fps": 5, "models": COCO})
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert isinstance(job_id, str)

    seen_progress = set()
    deadline = time.monotonic() + 120
    while (status := server.status(key, job_id))["status"] == 1 and time.monotonic() < deadline:
        seen_progress.add(status["progress"])
        time.sleep(0.1)
    assert status["status"] == 0, status
    assert status["progress"] == 1.0 and status["frames_done"] == status["frames_total"] == 40
    results = httpx.get(status["output_signed_url"]).json()
    assert results["frame_offset"][:10] == [0, 6, 12, 18, 24, 30, 36, 42, 48, 54]
    assert results["time_offset"][:3] == [0.0, 0.2, 0.4]
    classes = {p["class"] for entry in results["coco"] for p in entry["predictions"]}
    assert "person" in classes and "cat" in classes
    jsonschema.validate(results, httpx.get(f"{server.url}/results.schema.json").json())
    # the same job through the path without the trailing slash, and in the list
    assert httpx.get(f"{server.url}/videoinfer", params={"api_key": key, "job_id": job_id}).json()["status"] == 0
    listed = httpx.get(f"{server.url}/videoinfers", params={"api_key": key}).json()["jobs"]
    assert job_id in {j["job_id"] for j in listed}


def test_results_schema_refuses_a_malformed_results_file(server: Server) -> None:
    schema = httpx.get(f"{server.url}/results.schema.json").json()
    bad = {"frame_offset": [0], "time_offset": [0.0], "coco": [{"time": 0.1, "image": {"width": 1, "height": 1},
                                                               "predictions": [{"x": "left"}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    jsonschema.validate({"frame_offset": [0], "time_offset": [0.0], "coco": [None]}, schema)


def test_signed_urls_refuse_tampering_expiry_wrong_method_and_other_objects(server: Server, key: str,
                                                                            clip: Path) -> None:
    signed = httpx.post(f"{server.url}/video_upload_signed_url", params={"api_key": key},
                        json={"file_name": "a.mp4"}).json()["signed_url"]
    data = clip.read_bytes()
    sig = parse_qs(urlsplit(signed).query)["X-Goog-Signature"][0]
    cases = {
        "tampered": _with_query(signed, **{"X-Goog-Signature": ("0" if sig[0] != "0" else "1") + sig[1:]}),
        "longer expiry": _with_query(signed, **{"X-Goog-Expires": "999999"}),
        "expired": _with_query(signed, **{"X-Goog-Date": "1000", "X-Goog-Expires": "10"}),
        "unsigned": signed.split("?")[0],
        "other object": signed.replace("/a.mp4?", "/b.mp4?"),
    }
    for name, url in cases.items():
        response = httpx.put(url, content=data)
        assert response.status_code == 403, (name, response.text)
        assert response.json()["error"]["code"] in ("bad_signature", "url_expired", "unsigned_url"), name
    assert httpx.get(signed).status_code == 403  # signed for PUT, not GET
    assert httpx.put(signed, content=data).status_code == 200


def test_an_upload_url_takes_a_post_of_the_raw_body_and_a_results_url_does_not(server: Server, key: str,
                                                                                 clip: Path) -> None:
    """Issue 14.13: guides tell curl users to POST the file to the upload URL; that answered 405."""
    signed = httpx.post(f"{server.url}/video_upload_signed_url", params={"api_key": key},
                        json={"file_name": "posted.mp4"}).json()["signed_url"]
    # what `curl -X POST --data-binary @clip.mp4 URL` sends (its default form Content-Type included)
    posted = httpx.post(signed, content=clip.read_bytes(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert posted.status_code == 200, posted.text
    assert posted.json()["size"] == clip.stat().st_size
    done = server.wait(key, server.submit(key, signed).json()["job_id"])
    assert done["status"] == 0, done
    # a multipart form (curl -F) is not a video: refused with a clear code, not stored
    form = httpx.post(signed, files={"file": ("clip.mp4", b"\0" * 64, "video/mp4")})
    assert form.status_code == 400 and form.json()["error"]["code"] == "multipart_upload", form.text
    # the signature still binds the object and the expiry; a results URL (signed for GET) takes no POST
    assert httpx.post(signed.replace("/posted.mp4?", "/other.mp4?"), content=b"x").status_code == 403
    results = httpx.post(done["output_signed_url"], content=b"{}")
    assert results.status_code == 403 and results.json()["error"]["code"] == "bad_signature"
    assert httpx.get(done["output_signed_url"]).json()["frame_offset"]


def test_uploads_over_the_limit_are_refused_and_not_kept(server: Server, key: str) -> None:
    signed = httpx.post(f"{server.url}/video_upload_signed_url", params={"api_key": key},
                        json={"file_name": "big.mp4"}).json()["signed_url"]
    response = httpx.put(signed, content=b"\0" * 3_500_000)
    assert response.status_code == 413 and response.json()["error"]["code"] == "upload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(40):
            yield b"\0" * 100_000

    response = httpx.put(signed, content=chunks())
    assert response.status_code == 413
    uploads = server.data_dir / "blobs" / "uploads"
    assert not [p for p in uploads.rglob("*") if p.is_file() and p.stat().st_size > 3_000_000]


@pytest.mark.parametrize(
    ("params", "body", "status", "code"),
    [
        ({}, {"input_url": "http://127.0.0.1/x.mp4", "models": COCO}, 401, "missing_api_key"),
        ({"api_key": "vi_wrong"}, {"input_url": "http://127.0.0.1/x.mp4", "models": COCO}, 401, "invalid_api_key"),
        (None, "{not json", 400, "invalid_request"),
        (None, {"models": COCO}, 400, "invalid_request"),
        (None, {"input_url": "http://127.0.0.1/x.mp4"}, 400, "invalid_request"),
        (None, {"input_url": "http://127.0.0.1/x.mp4", "models": []}, 400, "invalid_request"),
        (None, {"input_url": "http://127.0.0.1/x.mp4", "models": COCO, "infer_fps": 0}, 400, "invalid_infer_fps"),
        (None, {"input_url": "http://127.0.0.1/x.mp4", "models": COCO, "infer_fps": -2}, 400, "invalid_infer_fps"),
        (None, {"input_url": "http://127.0.0.1/x.mp4", "models": COCO, "infer_fps": "abc"}, 400,
         "invalid_infer_fps"),
        (None, {"input_url": "http://127.0.0.1/x.mp4", "models": [{"model_id": "nope"}]}, 400, "unknown_model"),
        (None, {"input_url": "http://127.0.0.1/x.mp4", "models": [{"model_id": "../../etc/passwd"}]}, 400,
         "invalid_model"),
        (None, {"input_url": "http://127.0.0.1/x.mp4",
                "models": [{"model_id": "coco", "inference_params": {"confidence": 7}}]}, 400,
         "invalid_inference_params"),
        (None, {"input_url": "http://127.0.0.1/x.mp4", "models": COCO + COCO}, 400, "duplicate_model"),
        (None, {"input_url": "ftp://example.com/x.mp4", "models": COCO}, 400, "invalid_url"),
        (None, {"input_url": "http://169.254.169.254/latest", "models": COCO}, 422, "url_forbidden"),
    ],
)
def test_bad_submissions_get_a_clear_4xx(server: Server, key: str, params: dict | None, body: object,
                                         status: int, code: str) -> None:
    params = {"api_key": key} if params is None else params
    kwargs = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) \
        else {"json": body}
    response = httpx.post(f"{server.url}/videoinfer", params=params, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_unknown_jobs_and_paths_are_404_with_the_error_shape(server: Server, key: str) -> None:
    for response in (
        httpx.get(f"{server.url}/videoinfer", params={"api_key": key, "job_id": "nope"}),
        httpx.delete(f"{server.url}/videoinfer", params={"api_key": key, "job_id": "nope"}),
        httpx.get(f"{server.url}/blobs/results/acme/x.json"),
    ):
        assert response.status_code in (403, 404), response.text
        assert set(response.json()["error"]) == {"code", "message"}
    response = httpx.get(f"{server.url}/videoinfer", params={"api_key": key})
    assert response.status_code == 400


def test_a_workspace_never_sees_another_workspaces_jobs_uploads_or_results(server: Server, key: str,
                                                                           clip: Path) -> None:
    other = server.key("rival")
    upload = server.upload(key, clip)
    job_id = server.submit(key, upload).json()["job_id"]
    done = server.wait(key, job_id)
    for response in (
        httpx.get(f"{server.url}/videoinfer", params={"api_key": other, "job_id": job_id}),
        httpx.delete(f"{server.url}/videoinfer", params={"api_key": other, "job_id": job_id}),
        server.submit(other, upload),  # acme's upload as rival's input
        httpx.get(f"{server.url}/acme", params={"api_key": other}),
    ):
        assert response.status_code == 404, response.text
        assert job_id not in response.text and "coco" not in response.text
    assert job_id not in httpx.get(f"{server.url}/videoinfers", params={"api_key": other}).text
    # a results URL works for whoever holds it (it is a capability), but it cannot be re-pointed
    rival_url = done["output_signed_url"].replace("/results/acme/", "/results/rival/")
    assert httpx.get(rival_url).status_code == 403
    assert server.status(key, job_id)["state"] == "done"


def test_jobs_over_the_video_fps_or_on_a_non_video_fail_with_a_code_and_the_next_job_runs(
        server: Server, key: str, clip: Path, tmp_path: Path) -> None:
    too_fast = server.submit(key, server.upload(key, clip), infer_fps=60).json()["job_id"]
    status = server.wait(key, too_fast)
    assert status["status"] == 3 and status["error"]["code"] == "infer_fps_above_video_fps"
    assert "30" in status["error"]["message"]

    junk = tmp_path / "notes.mp4"
    junk.write_text("these are not the frames you are looking for\n" * 100)
    failed = server.wait(key, server.submit(key, server.upload(key, junk)).json()["job_id"])
    assert failed["status"] == 4 and failed["state"] == "failed"
    assert failed["error"]["message"].startswith("notes.mp4 is not a readable video")
    assert str(server.data_dir) not in failed["error"]["message"]  # never the server's own paths

    ok = server.wait(key, server.submit(key, server.upload(key, clip)).json()["job_id"])
    assert ok["status"] == 0


def test_input_urls_are_fetched_by_the_server(server: Server, key: str, clip: Path) -> None:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(clip.parent), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        ok = server.wait(key, server.submit(key, f"{base}/{clip.name}").json()["job_id"])
        assert ok["status"] == 0
        missing = server.wait(key, server.submit(key, f"{base}/missing.mp4").json()["job_id"])
        assert missing["status"] == 5 and missing["error"]["code"] == "url_unreachable"
    finally:
        httpd.shutdown()


def test_idempotency_key_returns_the_same_job(server: Server, key: str, clip: Path) -> None:
    upload = server.upload(key, clip)
    headers = {"Idempotency-Key": "retry-me-1"}
    body = {"input_url": upload, "infer_fps": 1, "models": COCO}
    first = httpx.post(f"{server.url}/videoinfer", params={"api_key": key}, json=body, headers=headers).json()
    again = httpx.post(f"{server.url}/videoinfer", params={"api_key": key}, json=body, headers=headers).json()
    assert first["job_id"] == again["job_id"]
    other = httpx.post(f"{server.url}/videoinfer", params={"api_key": key}, json=body).json()
    assert other["job_id"] != first["job_id"]
    # the same request written another way is the same request
    same = httpx.post(f"{server.url}/videoinfer", params={"api_key": key}, json={**body, "infer_fps": "1/1"},
                      headers=headers).json()
    assert same["job_id"] == first["job_id"]
    # the key reused for another request: refused, not silently answered with the first job (issue 14.15)
    reused = httpx.post(f"{server.url}/videoinfer", params={"api_key": key}, json={**body, "infer_fps": 2},
                        headers=headers)
    assert reused.status_code == 422, reused.text
    error = reused.json()["error"]
    assert error["code"] == "idempotency_key_reused" and "infer_fps" in error["message"]
    assert first["job_id"] in error["message"]
    server.wait(key, first["job_id"])


def test_an_unknown_model_is_named_as_the_request_named_it(server: Server, key: str) -> None:
    """Issue 14.15: a model sent without a version was reported as ``nosuch/1``; refused at submit (400)."""
    for model, named in (({"model_id": "nosuch"}, "unknown model nosuch in"),
                         ({"model_id": "nosuch", "model_version": "3"}, "unknown model nosuch/3 in")):
        response = server.submit(key, "http://127.0.0.1/x.mp4", models=[model])
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "unknown_model" and named in error["message"], error
        assert "nosuch/1" not in error["message"]


def test_the_webhook_is_signed_and_retried(server: Server, key: str, clip: Path) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(503 if len(received) == 1 else 200)  # the first delivery fails
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        job_id = server.submit(key, server.upload(key, clip), infer_fps=1, notify_url=url).json()["job_id"]
        server.wait(key, job_id)
        deadline = time.monotonic() + 30
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        httpd.shutdown()
    assert len(received) == 2
    headers, body = received[-1]
    expected = hmac.new(b"test-secret", headers["X-Vidinfer-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Vidinfer-Signature"] == f"sha256={expected}"
    payload = json.loads(body)
    assert payload["job_id"] == job_id and payload["status"] == 0 and payload["output_signed_url"]


class _Hook:
    """A loopback webhook receiver: the bodies it was POSTed, answered 200."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, count: int, seconds: float = 30) -> list[dict]:
        deadline = time.monotonic() + seconds
        while len(self.bodies) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.bodies


def test_a_job_cancelled_while_queued_sends_its_webhook(tmp_path: Path, clip: Path) -> None:
    """Issue 14.15: a running job cancelled sent the webhook, a queued one did not (no worker here: it stays
    queued). Cancelling it again sends nothing more."""
    hook = _Hook()
    try:
        with Server(tmp_path / "data", workers=0) as srv:
            key = srv.key("acme")
            job_id = srv.submit(key, srv.upload(key, clip), notify_url=hook.url).json()["job_id"]
            cancelled = httpx.delete(f"{srv.url}/videoinfer", params={"api_key": key, "job_id": job_id}).json()
            assert cancelled["status"] == 7
            (body,) = hook.wait(1)
            assert body["job_id"] == job_id and body["status"] == 7 and body["state"] == "cancelled"
            assert httpx.delete(f"{srv.url}/videoinfer", params={"api_key": key, "job_id": job_id}).status_code == 200
            time.sleep(1.0)
            assert len(hook.bodies) == 1
    finally:
        hook.httpd.shutdown()


def test_status_polling_is_rate_limited_per_key_with_retry_after(tmp_path: Path, clip: Path) -> None:
    with Server(tmp_path / "data", workers=0, env={"VIDINFER_STATUS_RATE_PER_MINUTE": "3"}) as srv:
        key, other = srv.key("acme"), srv.key("acme")
        job_id = srv.submit(key, srv.upload(key, clip)).json()["job_id"]
        answers = [httpx.get(f"{srv.url}/videoinfer", params={"api_key": key, "job_id": job_id}) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert answers[-1].json()["error"]["code"] == "rate_limited"
        assert srv.status(other, job_id)["status"] == 1  # another key has its own budget

        cancelled = httpx.delete(f"{srv.url}/videoinfer", params={"api_key": other, "job_id": job_id}).json()
        assert cancelled["state"] == "cancelled" and cancelled["status"] == 7


def test_openapi_docs_are_served(server: Server) -> None:
    assert httpx.get(f"{server.url}/docs").status_code == 200
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/videoinfer", "/video_upload_signed_url", "/videoinfers"} <= set(spec["paths"])


def _children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(proc.name))
    return out


def _without_timings(results: dict) -> dict:
    """Results minus each entry's ``time`` (seconds spent in the model), which no two runs share."""
    return {k: v if k.endswith("_offset") or not isinstance(v, list) else [{**e, "time": None} if e else e for e in v]
            for k, v in results.items()}


def test_sigkill_of_the_server_loses_no_job_and_keeps_finished_results(tmp_path: Path) -> None:
    video = make_video(tmp_path / "long.mp4", frames=240, size=(320, 240))  # 8 s: 40 samples at 5 fps
    short = make_video(tmp_path / "short.mp4", frames=30, size=(320, 240))
    srv = Server(tmp_path / "data", workers=1).start()
    try:
        key = srv.key("acme")
        first = srv.wait(key, srv.submit(key, srv.upload(key, short)).json()["job_id"])
        assert first["status"] == 0
        before = httpx.get(first["output_signed_url"]).content
        long_upload = srv.upload(key, video)
        ids = [srv.submit(key, long_upload, infer_fps=5).json()["job_id"] for _ in range(3)]
        deadline = time.monotonic() + 60
        while srv.status(key, ids[0])["frames_done"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.status(key, ids[0])["state"] == "running"
        workers = _children(srv.proc.pid)  # type: ignore[union-attr]
        srv.kill(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
                  for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if Path(f"/proc/{w}").exists()
                    and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]], "a worker outlived the server"

        srv.start()
        finals = [srv.wait(key, i) for i in ids]
        assert [f["status"] for f in finals] == [0, 0, 0]
        assert finals[0]["attempts"] == 2 and finals[1]["attempts"] == 1
        results = [_without_timings(httpx.get(f["output_signed_url"]).json()) for f in finals]
        assert results[0] == results[1] == results[2] and len(results[0]["frame_offset"]) == 40
        again = srv.status(key, first["job_id"])
        assert again["status"] == 0 and httpx.get(again["output_signed_url"]).content == before
        jobs = httpx.get(f"{srv.url}/videoinfers", params={"api_key": key}).json()["jobs"]
        assert len(jobs) == 4 and all(j["status"] == 0 for j in jobs)
    finally:
        srv.stop()


def test_workspace_names_that_are_api_paths_are_refused(tmp_path: Path) -> None:
    from vidinfer.errors import InvalidInput
    from vidinfer.jobs.store import JobStore

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    for name in ("videoinfer", "health", "docs", "Upper", "a/b", ""):
        with pytest.raises(InvalidInput):
            store.create_key(name)
    assert store.workspace_for_key(store.create_key("acme")) == "acme"

"""Security: keys, workspace isolation on every endpoint, signed URLs, SSRF, size limits, secrets in logs.

Each test drives a real ``vidinfer serve`` (``tests/server.py``) except where a unit is the honest place
(the key lookup's SQL, a DNS answer that changes between check and connection).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import pytest
from server import Server
from videos import make_video

COCO = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]
SECRET = "test-secret"  # tests/server.py's VIDINFER_SECRET_KEY: lets a test forge a *valid* signature
LIMIT = 3_000_000


# -- helpers ------------------------------------------------------------------------------------------
class Hits:
    """A loopback HTTP server that records every request and answers from ``routes``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                path, _, query = self.path.partition("?")
                if path == "/redirect":  # 302 to ?to=
                    self.send_response(302)
                    self.send_header("Location", parse_qs(query)["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path in ("/big", "/big-chunked"):  # LIMIT + 1 MB of "video"
                    body = b"\0" * (LIMIT + 1_000_000)
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    if path == "/big":
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    else:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        for i in range(0, len(body), 65536):
                            chunk = body[i:i + 65536]
                            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Content-Length", "4")
                    self.end_headers()
                    self.wfile.write(b"\0\0\0\0")

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _forge(path_key: str, method: str, issued: int, ttl: int) -> str:
    """The query of a URL signed the way LocalStore signs (only the test knows the server's secret)."""
    sig = hmac.new(SECRET.encode(), f"{method}\n{path_key}\n{issued + ttl}".encode(), hashlib.sha256).hexdigest()
    return urlencode({"X-Goog-Date": issued, "X-Goog-Expires": ttl, "X-Goog-Signature": sig})


def _blob_key(url: str) -> str:
    return urlsplit(url).path.split("/blobs/", 1)[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("sec") / "clip.mp4", frames=30, size=(160, 120))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Only 127.0.0.3 is allow-listed (the redirect and size tests serve from it); 127.0.0.1 is not."""
    env = {"VIDINFER_URL_ALLOWLIST": "127.0.0.3", "VIDINFER_MAX_UPLOAD_BYTES": str(LIMIT)}
    with Server(tmp_path_factory.mktemp("sec-data"), workers=1, env=env) as srv:
        srv.cli("models", "add", "acme/people/1", "--builtin", "coco")
        yield srv


@pytest.fixture(scope="module")
def acme(server: Server, clip: Path) -> dict[str, Any]:
    """Workspace A: a key, an upload, a finished job (submitted with an Idempotency-Key), its results."""
    key = server.key("acme")
    upload = server.upload(key, clip)
    response = httpx.post(f"{server.url}/videoinfer", params={"api_key": key}, headers={"Idempotency-Key": "same"},
                          json={"input_url": upload, "infer_fps": 1, "models": COCO})
    job = server.wait(key, response.json()["job_id"])
    assert job["status"] == 0, job
    return {"key": key, "upload": upload, "job": job, "job_id": job["job_id"],
            "results": httpx.get(job["output_signed_url"]).content}


# -- keys -----------------------------------------------------------------------------------------------
def test_keys_are_stored_only_as_sha256_hashes(server: Server, acme: dict[str, Any]) -> None:
    key = acme["key"]
    files = [p for p in server.data_dir.rglob("*") if p.is_file() and p.suffix not in (".mp4", ".json", ".onnx")]
    assert any(p.name.endswith(".db") for p in files), files
    blob = b"".join(p.read_bytes() for p in files)  # the database, its WAL and shared memory, the log
    assert hashlib.sha256(key.encode()).hexdigest().encode() in blob
    assert key.encode() not in blob and key[10:].encode() not in blob  # only "vi_" + 7 chars are kept, to revoke


def test_a_key_is_looked_up_by_its_hash(tmp_path: Path) -> None:
    """The SQL sees only the SHA-256 of the presented key, never the key: the lookup by that hash is the
    whole check (timing an index lookup on a hash leaks nothing about the key); a key one character off
    finds nothing."""
    from sqlalchemy import event

    from vidinfer.jobs.store import JobStore

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    key = store.create_key("acme")
    sent: list[str] = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, params, *_a: sent.append(f"{statement} {params!r}"))

    assert store.workspace_for_key(key) == "acme"
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
    assert store.workspace_for_key(wrong) is None
    text = "\n".join(sent)
    for presented in (key, wrong):
        assert hashlib.sha256(presented.encode()).hexdigest() in text and presented not in text


def test_a_revoked_key_gets_401(server: Server) -> None:
    key = server.key("revoked-ws")
    assert httpx.post(f"{server.url}/", params={"api_key": key}).json() == {"workspace": "revoked-ws"}
    validated = time.monotonic()
    assert "revoked 1 key" in server.cli("keys", "revoke", key[:10])
    # the API remembers a valid key for VIDINFER_KEY_CACHE_TTL (1 s): revoked by the CLI, it stops within that
    time.sleep(max(0.0, validated + 1.0 - time.monotonic()))
    for response in (httpx.post(f"{server.url}/", params={"api_key": key}),
                     httpx.get(f"{server.url}/videoinfers", params={"api_key": key})):
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


# -- one workspace never reaches another's --------------------------------------------------------------
def test_every_endpoint_refuses_another_workspaces_ids(server: Server, acme: dict[str, Any]) -> None:
    """Workspace B calls every operation of the OpenAPI spec (enumerated, so new endpoints are covered)
    with A's ids. An operation that takes one of A's ids answers 403/404 with only the error shape;
    any other answer carries none of A's ids or data. A new parameter or body fails here until it
    is given a value below."""
    rival = server.key("rival")
    rival_upload = httpx.post(f"{server.url}/video_upload_signed_url", params={"api_key": rival},
                              json={"file_name": "r.mp4"}).json()["signed_url"]
    results_key = _blob_key(acme["job"]["output_signed_url"])
    upload_key = _blob_key(acme["upload"])
    values = {"api_key": rival, "job_id": acme["job_id"], "workspace": "acme", "project": "people", "version": "1",
              "limit": 200, "q": "person", "model": "clip", "model_version": "1", "idempotency-key": "same",
              "format": "csv", "class": "person", "min_confidence": 0.1, "track_id": 1, "zone": "zone 1", "start": 0,
              "end": 1, "gap": 0, "clip": "true", "frame": 0, "job_a": acme["job_id"], "job_b": acme["job_id"],
              "model_a": "coco", "model_b": "coco", "iou": 0.5, "top": 8}
    a_ids = {"job_id": acme["job_id"], "results": results_key, "upload": upload_key.split("/")[2], "project": "people"}
    bodies = {("post", "/videoinfer"): {"input_url": acme["upload"], "infer_fps": 1, "models": COCO},
              ("post", "/video_upload_signed_url"): {"file_name": "x.mp4"},
              ("post", "/videoinfer/render"): {}}
    spec = httpx.get(f"{server.url}/openapi.json").json()
    tried = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            params = {p["name"]: p for p in op.get("parameters", [])}
            unknown = set(params) - set(values) - {"key"}
            assert not unknown, f"{method.upper()} {path}: new parameters {unknown}: give them a value in this test"
            if "requestBody" in op:
                assert (method, path) in bodies, f"{method.upper()} {path}: give it a body in this test"
            targets = [upload_key, results_key] if "key" in params else [None]
            for target in targets:
                url = server.url + path
                for name, p in params.items():
                    if p["in"] == "path":
                        url = url.replace("{" + name + "}", target if name == "key" else str(values[name]))
                query = {n: values[n] for n, p in params.items() if p["in"] == "query"}
                if "key" in params:  # B's own signature (for B's upload) on A's object
                    query = {k: v[0] for k, v in parse_qs(urlsplit(rival_upload).query).items()}
                headers = {"Idempotency-Key": values["idempotency-key"]} if "idempotency-key" in params else {}
                response = httpx.request(method, url, params=query, headers=headers, json=bodies.get((method, path)),
                                         timeout=30)
                tried += 1
                label = f"{method.upper()} {path} ({response.status_code})"
                takes_a_id = bool({"job_id", "job_a", "workspace", "key"} & set(params)) or \
                    (method, path) == ("post", "/videoinfer")
                if takes_a_id:
                    assert response.status_code in (403, 404), (label, response.text)
                    assert set(response.json()) == {"error"}, label
                    shown = response.text
                    assert results_key not in shown and "output_signed_url" not in shown, label
                else:
                    assert response.status_code < 500, (label, response.text)
                    leaked = {name for name, value in a_ids.items() if value in response.text}
                    assert not leaked, (label, leaked, response.text[:500])
    assert tried >= len(spec["paths"])
    # and A's things are as they were: not cancelled, no render queued, results unchanged
    assert server.status(acme["key"], acme["job_id"])["state"] == "done"
    render = httpx.get(f"{server.url}/videoinfer/render", params={"api_key": acme["key"], "job_id": acme["job_id"]})
    assert render.status_code == 404
    assert httpx.get(server.status(acme["key"], acme["job_id"])["output_signed_url"]).content == acme["results"]
    assert httpx.get(f"{server.url}/acme/people", params={"api_key": acme["key"]}).status_code == 200


# -- client strings never reach the registry, the file system or a model loader ---------------------------
def _answer(response: httpx.Response, name: str) -> tuple[int, str, str]:
    """(status, code, message with the probed name blanked): what a caller can learn from one answer."""
    error = response.json().get("error", {})
    return response.status_code, error.get("code", ""), error.get("message", "").replace(name, "NAME")


def _api_mapped_libraries(server: Server) -> str:
    """The shared libraries the API process (uvicorn in ``vidinfer serve``'s own process) has mapped."""
    assert server.proc is not None
    return Path(f"/proc/{server.proc.pid}/maps").read_text()


def test_search_resolves_models_as_jobs_do_and_opens_no_path(server: Server, acme: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """Guards against ``GET /search?model=`` reading the registry and the disk on another workspace's
    say-so. It used to load ``model`` straight from the registry: workspace B read A's project names in
    ``unknown_model``'s list of known models, told A's real projects (``not_a_clip_model``) from made-up
    ones, told existing server files (``invalid_model_file``) from missing ones, and made the API process
    load any ``.onnx`` file on the server. Every probe must answer exactly as a name that exists nowhere,
    name none of A's things, and load nothing into the API process."""
    from onnx_graphs import channel_mean_classifier

    rival = server.key("search-rival")
    real_onnx = channel_mean_classifier(tmp_path / "server-side.onnx")
    probes = [  # (probe, a name of the same shape that exists nowhere)
        ("acme/people/1", "nobody/nothing/1"), ("acme/people", "nobody/nothing"), ("people", "nothing"),
        ("/etc/passwd", "/etc/no-such-file"), (str(real_onnx), str(tmp_path / "no-such.onnx")),
        ("server-side.onnx", "no-such.onnx"), ("../../../etc/passwd", "../../../etc/no-such-file"),
        ("/proc/self/environ", "/proc/self/no-such-file"), (str(server.data_dir / "models.json"),
                                                            str(server.data_dir / "no-such.json")),
    ]
    for probe, nowhere in probes:
        answers = [httpx.get(f"{server.url}/search", params={"api_key": rival, "q": "a person", "model": name},
                             timeout=30) for name in (probe, nowhere)]
        assert 400 <= answers[0].status_code < 500, (probe, answers[0].text)
        assert _answer(answers[0], probe) == _answer(answers[1], nowhere), (probe, answers[0].text, answers[1].text)
        shown = _answer(answers[0], probe)[2]  # the probe echoed back is no leak
        assert "acme" not in shown and "people" not in shown, answers[0].text
    # a model name that exists nowhere lists no workspace's models either, only built-ins
    unknown = httpx.get(f"{server.url}/search", params={"api_key": rival, "q": "x", "model": "nope"}).json()
    assert unknown["error"]["code"] == "unknown_model" and "acme" not in unknown["error"]["message"]
    # A itself reaches its project by the name jobs use; a detector is refused without being loaded
    own = httpx.get(f"{server.url}/search", params={"api_key": acme["key"], "q": "x", "model": "people"})
    assert (own.status_code, own.json()["error"]["code"]) == (400, "not_a_clip_model")
    # no probe (nor A's own call) loaded a model into the API process
    assert "onnxruntime" not in _api_mapped_libraries(server)


# -- signed URLs ----------------------------------------------------------------------------------------
def test_signed_urls_refuse_re_pointing_expiry_wrong_method_and_traversal(server: Server, acme: dict[str, Any],
                                                                          clip: Path) -> None:
    key = acme["key"]
    other = server.wait(key, server.submit(key, acme["upload"]).json()["job_id"])
    first_url, other_url = acme["job"]["output_signed_url"], other["output_signed_url"]
    first_key, other_key = _blob_key(first_url), _blob_key(other_url)
    query = urlsplit(first_url).query
    now = int(time.time())

    def code(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["error"]["code"]

    # one job's results signature re-pointed to another job's results (same workspace)
    assert code(httpx.get(f"{server.url}/blobs/{other_key}?{query}")) == (403, "bad_signature")
    # correctly signed, but expired
    expired = f"{server.url}/blobs/{first_key}?{_forge(first_key, 'GET', now - 100, 10)}"
    assert code(httpx.get(expired)) == (403, "url_expired")
    # a GET URL used to PUT over the results
    assert code(httpx.put(first_url, content=b"{}")) == (403, "bad_signature")
    assert httpx.get(first_url).content == acme["results"]
    # an upload URL (PUT) used to read the upload back
    assert code(httpx.get(acme["upload"])) == (403, "bad_signature")
    # traversal out of the blob root, even with a valid signature for the crafted key
    for crafted in ("uploads/acme/../../server.log", "../server.log", "results/acme/..\\..\\server.log",
                    "/etc/passwd", "results//acme/x.json"):
        url = f"{server.url}/blobs/{quote(crafted, safe='')}?{_forge(crafted, 'GET', now, 60)}"
        assert code(httpx.get(url)) == (400, "invalid_key"), crafted
        put = f"{server.url}/blobs/{quote(crafted, safe='')}?{_forge(crafted, 'PUT', now, 60)}"
        assert code(httpx.put(put, content=b"x")) == (400, "invalid_key"), crafted
    # double-encoded: the key is the literal "..%2F..%2Fserver.log", one harmless name that does not exist
    double = f"{server.url}/blobs/..%252F..%252Fserver.log"
    assert code(httpx.get(double)) == (403, "unsigned_url")
    assert code(httpx.get(f"{double}?{_forge('..%2F..%2Fserver.log', 'GET', now, 60)}")) == (404, "object_not_found")
    # nothing was written outside the blob root
    assert not (server.data_dir.parent / "server.log").exists()


# -- SSRF -----------------------------------------------------------------------------------------------
FORBIDDEN = [
    "http://localhost/v.mp4", "http://LOCALHOST./v.mp4", "http://127.0.0.1/v.mp4", "http://127.0.0.2/v.mp4",
    "http://127.1/v.mp4", "http://127.0.0.1./v.mp4", "http://127.0.0.4/v.mp4",
    "http://10.0.0.1/v.mp4", "http://172.16.5.4/v.mp4", "http://172.31.255.255/v.mp4", "http://192.168.1.1/v.mp4",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.64.0.1/v.mp4", "http://0.0.0.0/v.mp4", "http://0/v.mp4",
    "http://[::1]/v.mp4", "http://[fd00::1]/v.mp4", "http://[fe80::1]/v.mp4", "http://[::ffff:127.0.0.1]/v.mp4",
    "http://[::ffff:7f00:1]/v.mp4", "http://[::]/v.mp4",
    "http://[::7f00:1]/v.mp4", "http://[64:ff9b::a9fe:a9fe]/v.mp4", "http://[2002:a00:1::]/v.mp4",  # IPv4 inside
    "http://2130706433/v.mp4", "http://0x7f000001/v.mp4", "http://0177.0.0.1/v.mp4", "http://017700000001/v.mp4",
    "http://user:pw@127.0.0.2/v.mp4", "http://224.0.0.1/v.mp4",
]


def _resolves(host: str | None) -> bool:
    try:
        return bool(socket.getaddrinfo(host, 80))
    except (socket.gaierror, UnicodeError):
        return False


@pytest.mark.parametrize("field", ["input_url", "notify_url"])
def test_urls_to_loopback_private_link_local_and_metadata_are_refused(server: Server, acme: dict[str, Any],
                                                                      field: str) -> None:
    hostname = socket.gethostname()  # resolves to a loopback or private address on these machines
    urls = FORBIDDEN + [f"http://{hostname}/v.mp4"]
    for url in urls:
        body = {"input_url": url} if field == "input_url" else {"input_url": acme["upload"], "notify_url": url}
        response = httpx.post(f"{server.url}/videoinfer", params={"api_key": acme["key"]},
                              json={"infer_fps": 1, "models": COCO, **body}, timeout=30)
        assert response.status_code == 422, (url, response.text)
        # a name this machine cannot resolve ("localhost." here) is refused all the same, as unreachable
        expected = {"url_forbidden"} if _resolves(urlsplit(url).hostname) else {"url_forbidden", "url_unreachable"}
        assert response.json()["error"]["code"] in expected, url
        if response.json()["error"]["code"] == "url_forbidden":  # the message names the field at fault
            message = response.json()["error"]["message"]
            assert message.startswith(f"{field} host") and ({"input_url", "notify_url"} - {field}).pop() not in message
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/v.mp4", "gopher://127.0.0.1:6379/_INFO", "http:///v.mp4",
                "dict://127.0.0.1:11211/stat"):
        body = {"input_url": url} if field == "input_url" else {"input_url": acme["upload"], "notify_url": url}
        response = httpx.post(f"{server.url}/videoinfer", params={"api_key": acme["key"]},
                              json={"infer_fps": 1, "models": COCO, **body})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_url", url
        message = response.json()["error"]["message"]  # names the field at fault, and only it
        assert message.startswith(f"{field} ") and ({"input_url", "notify_url"} - {field}).pop() not in message, message


#: URLs no parser should have to guess about: (url, the code it is refused with). Each once crashed a
#: parser (``urlsplit``'s ValueError gave 500 and a reset connection), or could be read two ways.
MALFORMED = [
    ("http://[::1/v.mp4", "invalid_url"), ("http://::1]/v.mp4", "invalid_url"),  # IPv6 brackets unbalanced
    ("http://[::1]]/v.mp4", "invalid_url"), ("http://[[::1]/v.mp4", "invalid_url"),
    ("http://[127.0.0.1]/v.mp4", "invalid_url"), ("http://[::1%25lo]/v.mp4", "invalid_url"),  # no IPv6 inside
    ("http://[v1.x]/v.mp4", "invalid_url"),
    ("http://example.com:99999/v.mp4", "invalid_url"), ("http://example.com:abc/v.mp4", "invalid_url"),  # ports
    ("http://example.com:-1/v.mp4", "invalid_url"), ("http://example.com:0/v.mp4", "invalid_url"),
    ("http://example.com:/v.mp4", "invalid_url"), ("http://[::1]:99999/v.mp4", "invalid_url"),
    ("http:///v.mp4", "invalid_url"), ("http://:80/v.mp4", "invalid_url"), ("http://@/v.mp4", "invalid_url"),
    ("http://user@/v.mp4", "invalid_url"), ("http://?x", "invalid_url"), ("http://", "invalid_url"),  # no host
    ("http://exa mple.com/v.mp4", "invalid_url"), ("http://example.com/a video.mp4", "invalid_url"),  # spaces
    ("http://example.com/v.mp4\nHost: evil", "invalid_url"), ("http://example.com\r\n/v.mp4", "invalid_url"),
    ("http://example.com/\x00.mp4", "invalid_url"), ("http://exa\x00mple.com/", "invalid_url"),  # NUL
    ("http://example.com/\t", "invalid_url"), (" http://example.com/v.mp4", "invalid_url"),
    ("http://example.com/v.mp4\u200b", "invalid_url"), ("http://\u202eexample.com/", "invalid_url"),
    ("http://\uff0e/v.mp4", "invalid_url"), ("http://a..b/v.mp4", "invalid_url"),  # unicode and odd hosts
    ("http://-a.com/v.mp4", "invalid_url"), ("http://%31%32%37.0.0.1/v.mp4", "invalid_url"),
    ("http://" + "a" * 64 + ".com/v.mp4", "invalid_url"), ("http://" + "a." * 130 + "com/", "invalid_url"),
    ("http://\ud800.com/", "invalid_request"),  # a lone surrogate: not a string at all
    ("file:/etc/passwd", "invalid_url"), ("file:///etc/passwd", "invalid_url"),  # schemes
    ("ftp://example.com/v.mp4", "invalid_url"), ("javascript:alert(1)", "invalid_url"),
    ("data:video/mp4;base64,AAAA", "invalid_url"), ("jar:http://example.com/a.jar!/v.mp4", "invalid_url"),
    ("http:/example.com/v.mp4", "invalid_url"), ("http:example.com", "invalid_url"),
    ("//example.com/v.mp4", "invalid_url"), ("example.com/v.mp4", "invalid_url"), ("://x", "invalid_url"),
    ("gs://bucket/v.mp4", "invalid_url"), ("h\x00ttp://example.com/", "invalid_url"),
    ("http://example.com/" + "a" * 5000, "invalid_request"),  # overlong: over the field's 4096 characters
    ("http://evil.com\\@127.0.0.3/v.mp4", "invalid_url"), ("http://127.0.0.3\\@evil.com/", "invalid_url"),
    ("http://127.0.0.3\\evil.com/v.mp4", "invalid_url"),  # userinfo tricks: read two ways by two parsers
    ("s3://", "invalid_url"), ("s3:///key.mp4", "invalid_url"), ("s3://b/v.mp4", "invalid_url"),  # s3 oddities
    ("s3://Bucket/v.mp4", "invalid_url"), ("s3://bucket", "invalid_key"), ("s3://bucket/", "invalid_key"),
    ("s3://bucket//v.mp4", "invalid_key"), ("s3://bucket/../v.mp4", "invalid_key"),
    ("s3://bucket/a/./v.mp4", "invalid_key"), ("s3://bucket/v.mp4?versionId=1", "invalid_url"),
    ("s3://bucket/v.mp4#x", "invalid_url"), ("s3://bucket/v\x00.mp4", "invalid_url"),
    ("s3://bucket/v\n.mp4", "invalid_url"), ("s3://bucket/a\\b.mp4", "invalid_key"),
    ("s3://bu cket/v.mp4", "invalid_url"), ("s3://[::1/v.mp4", "invalid_url"),
]


@pytest.mark.parametrize("field", ["input_url", "notify_url"])
def test_malformed_urls_are_refused_with_a_code(server: Server, acme: dict[str, Any], field: str) -> None:
    """Guards against a malformed URL crashing the API (``http://[::1/v.mp4`` answered 500 and reset
    the connection) or being read differently by the checker and by httpx (a backslash, a stray bracket,
    a percent-encoded host): every one is a 400 with a code, in both URL fields; a notify_url is never s3://."""
    for url, code in MALFORMED:
        body = {"input_url": url} if field == "input_url" else {"input_url": acme["upload"], "notify_url": url}
        response = httpx.post(f"{server.url}/videoinfer", params={"api_key": acme["key"]}, timeout=30,
                              content=json.dumps({"infer_fps": 1, "models": COCO, **body}),  # \ud800 escaped
                              headers={"Content-Type": "application/json"})
        expected = "invalid_url" if field == "notify_url" and url.startswith("s3:") and code == "invalid_key" else code
        assert response.status_code == 400, (url, response.status_code, response.text)
        assert response.json()["error"]["code"] == expected, (url, response.text)
    assert httpx.get(f"{server.url}/health").status_code == 200  # nothing reset the server


def test_the_sdk_and_the_cli_refuse_malformed_urls_before_any_request(tmp_path: Path) -> None:
    """Guards the client side of the same parsing: the SDK's ``api_url``, ``submit``'s video and
    ``notify_url``, and ``vidinfer infer URL`` raise ``invalid_url`` (CLI exit 2) instead of a ValueError or
    httpx's InvalidURL (exit 1, "unexpected error"), and send nothing."""
    import subprocess
    import sys

    from vidinfer import Client
    from vidinfer.errors import InvalidInput

    for url, code in MALFORMED:
        if code != "invalid_url" or url.startswith(("s3:", "gs:")):
            continue
        with pytest.raises(InvalidInput) as caught:
            Client(url, "key")
        assert caught.value.code == "invalid_url", url
    sent: list[str] = []
    client = Client("http://127.0.0.1:9", "key", transport=httpx.MockTransport(lambda r: sent.append(str(r.url))))
    for url in ("http://[::1/v.mp4", "http://example.com:99999/v.mp4", "http://evil.com\\@127.0.0.3/v.mp4"):
        with pytest.raises(InvalidInput, match="not a valid URL"):
            client.submit(url, "coco")
        with pytest.raises(InvalidInput, match="notify_url"):
            client.submit("https://example.com/v.mp4", "coco", notify_url=url)
    assert sent == []
    for url in ("http://[::1/v.mp4", "http://example.com:abc/v.mp4"):
        out = subprocess.run([sys.executable, "-m", "vidinfer.cli", "infer", url, "--model", "coco", "-q"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
                             env={**os.environ, "VIDINFER_DATA_DIR": str(tmp_path / "data")})
        assert out.returncode == 2 and "not a valid URL" in out.stderr, (url, out.returncode, out.stderr[-2000:])
        assert "Traceback" not in out.stderr


def test_redirects_from_an_allowed_host_to_a_forbidden_one_are_not_followed(server: Server,
                                                                            acme: dict[str, Any]) -> None:
    """127.0.0.3 is allow-listed; it 302s to 127.0.0.2, a private, a metadata, an IPv6 loopback address,
    ``localhost`` and a decimal IP: the worker checks each hop and never connects to the trap."""
    allowed, trap = Hits("127.0.0.3"), Hits("127.0.0.2")
    try:
        port = trap.httpd.server_address[1]
        targets = [f"{trap.url}/v.mp4", f"http://localhost:{port}/v.mp4", f"http://[::1]:{port}/v.mp4",
                   "http://10.1.2.3/v.mp4", "http://169.254.169.254/latest/meta-data/", f"http://2130706433:{port}/"]
        jobs = []
        for target in targets:
            response = server.submit(acme["key"], f"{allowed.url}/redirect?{urlencode({'to': target})}",
                                     notify_url=f"{allowed.url}/redirect?{urlencode({'to': trap.url + '/hook'})}")
            assert response.status_code == 200, response.text
            jobs.append(response.json()["job_id"])
        for job_id, target in zip(jobs, targets):
            status = server.wait(acme["key"], job_id)
            assert status["status"] == 5 and status["error"]["code"] == "url_forbidden", (target, status)
        time.sleep(1.5)  # the webhooks (302 answered: not followed, retried later)
        assert len([r for r in allowed.requests if r.startswith("GET /redirect")]) == len(targets)
        assert any(r.startswith("POST /redirect") for r in allowed.requests)
        assert trap.requests == []
    finally:
        allowed.close()
        trap.close()


def test_the_checked_address_is_the_connected_address(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DNS rebinding: a name that resolves to a public address when checked and to loopback a moment
    later. The fetch connects to the address it checked (the host name goes in Host and SNI), so the
    loopback server is never reached; without pinning the second lookup would reach it."""
    from vidinfer.errors import FetchError
    from vidinfer.fetch import UrlPolicy, fetch_to_file

    inside = Hits("127.0.0.1")
    port = inside.httpd.server_address[1]
    answers = iter(["192.0.2.1"] + ["127.0.0.1"] * 10)  # checked public (TEST-NET is non-global: see below)
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            looked_up.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    # 192.0.2.0/24 is documentation space, so Python calls it non-global: allow it to stand in for "public"
    policy = UrlPolicy.from_allowlist("192.0.2.0/24")
    try:
        with pytest.raises(FetchError):
            fetch_to_file(f"http://rebind.example:{port}/v.mp4", tmp_path / "v.mp4", policy=policy,
                          max_bytes=LIMIT, timeout=2)
        assert looked_up == ["rebind.example"]  # resolved once, by the check; the connection reused it
        assert inside.requests == []
        # the same fetch pinned to an allowed address does arrive, with the name in Host
        target, headers, extensions = UrlPolicy.from_allowlist("127.0.0.0/8").pin(f"http://localhost:{port}/v.mp4")
        assert target == f"http://127.0.0.1:{port}/v.mp4" and headers == {"Host": f"localhost:{port}"}
        assert extensions == {"sni_hostname": "localhost"}
    finally:
        inside.close()


# -- size limits ----------------------------------------------------------------------------------------
def test_an_input_url_over_the_limit_fails_with_input_too_large(server: Server, acme: dict[str, Any]) -> None:
    files = Hits("127.0.0.3")
    try:
        for path in ("/big", "/big-chunked"):  # announced by Content-Length, and not announced
            status = server.wait(acme["key"], server.submit(acme["key"], f"{files.url}{path}").json()["job_id"])
            assert status["status"] == 9 and status["error"]["code"] == "input_too_large", (path, status)
    finally:
        files.close()
    leftovers = [p for p in server.data_dir.rglob("*") if p.is_file() and p.stat().st_size > LIMIT]
    assert leftovers == []


# -- no secret in logs ----------------------------------------------------------------------------------
def _full_round(srv: Server, clip: Path) -> list[str]:
    """A job with a key and a webhook, a failed auth, status polls: every secret that went by."""
    received: list[dict[str, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append(dict(self.headers))
            self.send_response(500 if len(received) == 1 else 200)  # one failed delivery: it gets logged
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        key = srv.key("acme")
        upload = srv.upload(key, clip)
        bad = key[:-4] + "beef"
        assert httpx.get(f"{srv.url}/videoinfers", params={"api_key": bad}).status_code == 401
        job_id = srv.submit(key, upload, notify_url=f"http://127.0.0.1:{hook.server_address[1]}/hook").json()["job_id"]
        done = srv.wait(key, job_id)
        assert done["status"] == 0, done
        assert httpx.get(done["output_signed_url"]).status_code == 200
        deadline = time.monotonic() + 20
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(received) == 2
    finally:
        hook.shutdown()
    signatures = []
    for url in (upload, done["output_signed_url"]):
        query = parse_qs(urlsplit(url).query + "&" + urlsplit(url).fragment)
        signatures += [v[0] for k, v in query.items() if k.lower().endswith("signature")]
    assert len(signatures) == 2
    return [key, bad, *signatures, *(h["X-Vidinfer-Signature"].removeprefix("sha256=") for h in received)]


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_no_secret_appears_in_the_debug_logs(tmp_path: Path, clip: Path, storage: str,
                                             request: pytest.FixtureRequest) -> None:
    secret_key = "sk-" + secrets.token_hex(16)
    env = {"VIDINFER_SECRET_KEY": secret_key}
    if storage == "s3":
        s3 = request.getfixturevalue("seaweed_s3")
        env.update(s3.env(f"logs-{secrets.token_hex(3)}"))
    srv = Server(tmp_path / "data", workers=1, env=env, debug=True)
    with srv:
        found = _full_round(srv, clip)
    log = srv.log.read_text(errors="replace")
    assert "DEBUG" in log and "job " in log  # debug logging was on (serve logs its HTTP stack), the worker logged
    needles = {"VIDINFER_SECRET_KEY": secret_key, "api key": found[0], "wrong api key": found[1]}
    needles.update({f"signature {i}": s for i, s in enumerate(found[2:])})
    if storage == "s3":
        needles["S3 secret"] = env["VIDINFER_S3_SECRET_KEY"]
    leaked = {name for name, value in needles.items() if value and value in log}
    assert not leaked, (leaked, [line for line in log.splitlines() if any(v in line for v in needles.values())][:5])
    assert not re.search(r"(?i)(api_key=vi_|x-goog-signature=|x-amz-signature=)", log)


def test_job_errors_and_logs_show_an_input_url_without_its_query(server: Server, acme: dict[str, Any]) -> None:
    """A user's presigned input URL carries a credential in its query: failures name the URL without it."""
    token = secrets.token_hex(12)
    status = server.wait(acme["key"], server.submit(acme["key"], f"http://127.0.0.3:9/v.mp4?X-Amz-Signature={token}")
                         .json()["job_id"])
    assert status["status"] == 5 and "127.0.0.3:9/v.mp4" in status["error"]["message"]
    assert token not in status["error"]["message"] and token not in server.log.read_text(errors="replace")

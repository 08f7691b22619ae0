"""S3 storage against a real S3 server (SeaweedFS on loopback, ``tests/seaweed.py``): presigned URLs
that the server itself verifies, the ``X-Goog-Expires`` fragment the roboflow SDK needs, objects, and
``vidinfer serve`` keeping its blobs in a bucket end to end."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import requests
from seaweed import SeaweedS3
from server import Server
from videos import make_video

from vidinfer.config import Settings
from vidinfer.errors import FetchError, InvalidInput, NotFound, PayloadTooLarge, StorageError
from vidinfer.storage import open_store
from vidinfer.storage.base import parse_s3_url
from vidinfer.storage.local import LocalStore

s3 = pytest.importorskip("vidinfer.storage.s3", reason="S3 storage needs obstore (the scale extra)")

OTHER_BUCKET = "vidinfer-other"
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def store(seaweed_s3: SeaweedS3) -> s3.S3Store:
    """A store under a fresh prefix of the test bucket."""
    return s3.S3Store(seaweed_s3.bucket, f"t/{uuid.uuid4().hex[:8]}", endpoint=seaweed_s3.endpoint,
                      access_key=seaweed_s3.access_key, secret_key=seaweed_s3.secret_key,
                      region=seaweed_s3.region)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


def _sdk_expires(signed_url: str) -> str:
    """What roboflow 1.7.3's ``predict_video`` does to the upload URL."""
    return signed_url.split("&X-Goog-Expires")[1].split("&")[0].strip("=")


def test_presigned_put_then_get_roundtrip_and_the_sdks_expiry_split(store: s3.S3Store) -> None:
    key = "uploads/acme/1/clip.mp4"
    put = store.sign_url("PUT", key, 3600)
    assert urlsplit(put).fragment.endswith("&X-Goog-Expires=3600") and "X-Amz-Signature=" in put
    assert _sdk_expires(put) == "3600"
    assert requests.put(put, data=b"video bytes", headers=OCTET).status_code == 200
    assert store.exists(key) and store.get_bytes(key) == b"video bytes"
    get = store.sign_url("GET", key, 60)
    assert httpx.get(get).content == b"video bytes"
    assert requests.get(get).content == b"video bytes"


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_the_fragment_is_never_sent_but_the_same_text_in_the_query_breaks_the_signature(
        store: s3.S3Store, client: str) -> None:
    put = {"requests": lambda url: requests.put(url, data=b"abc", headers=OCTET).status_code,
           "httpx": lambda url: httpx.put(url, content=b"abc", headers=OCTET).status_code}[client]
    signed = store.sign_url("PUT", "uploads/acme/2/a.mp4", 600)
    base, fragment = signed.split("#")
    assert put(f"{base}&{fragment}") == 403  # appended as query parameters: refused by the S3 server
    assert put(signed) == 200  # so a 200 proves the client left the fragment out
    assert store.get_bytes("uploads/acme/2/a.mp4") == b"abc"


def test_the_s3_server_refuses_tampered_expired_unsigned_and_wrong_method_urls(store: s3.S3Store) -> None:
    key = "uploads/acme/3/a.mp4"
    store.put_bytes(key, b"original")
    put = store.sign_url("PUT", key, 600)
    get = store.sign_url("GET", key, 600)
    sig = parse_qs(urlsplit(put).query)["X-Amz-Signature"][0]
    expiring = store.sign_url("PUT", key, 1)
    time.sleep(2.1)
    cases = {
        "tampered signature": httpx.put(_with_query(put, **{"X-Amz-Signature": ("0" if sig[0] != "0" else "1")
                                                           + sig[1:]}), content=b"x"),
        "longer expiry": httpx.put(_with_query(put, **{"X-Amz-Expires": "604800"}), content=b"x"),
        "other object": httpx.put(put.replace("/a.mp4?", "/b.mp4?"), content=b"x"),
        "expired": httpx.put(expiring, content=b"x"),
        "PUT URL used to GET": httpx.get(put),
        "GET URL used to PUT": httpx.put(get, content=b"x"),
        "unsigned GET": httpx.get(get.split("?")[0]),
        "unsigned PUT": httpx.put(put.split("?")[0], content=b"x"),
    }
    for name, response in cases.items():
        assert response.status_code == 403, (name, response.status_code, response.text[:300])
    assert store.get_bytes(key) == b"original" and not store.exists("uploads/acme/3/b.mp4")


def test_key_from_url_knows_its_own_urls_and_s3_urls_of_its_bucket_only(store: s3.S3Store,
                                                                        seaweed_s3: SeaweedS3) -> None:
    key = "uploads/acme/4/My_Clip.mp4"
    prefix = store.prefix
    assert store.key_from_url(store.sign_url("PUT", key, 60)) == key
    assert store.key_from_url(store.sign_url("GET", key, 60)) == key
    assert store.key_from_url(f"s3://{seaweed_s3.bucket}/{prefix}/{key}") == key
    endpoint = seaweed_s3.endpoint
    for foreign in (
        f"s3://{seaweed_s3.bucket}/elsewhere/{key}",  # same bucket, outside the prefix: not ours
        f"s3://{OTHER_BUCKET}/{prefix}/{key}",
        f"{endpoint}/{OTHER_BUCKET}/{prefix}/{key}?X-Amz-Signature=0",
        f"{endpoint}/{seaweed_s3.bucket}/other/{key}",
        f"http://127.0.0.2:{urlsplit(endpoint).port}/{seaweed_s3.bucket}/{prefix}/{key}",
        f"https://example.com/{seaweed_s3.bucket}/{prefix}/{key}",
        f"http://127.0.0.1:1/blobs/{key}",
    ):
        assert store.key_from_url(foreign) is None, foreign
    for bad in (f"{endpoint}/{seaweed_s3.bucket}/{prefix}/uploads/../x", f"s3://{seaweed_s3.bucket}/{prefix}//x",
                "s3://Bad_Bucket!/x", "s3://ab/x"):
        with pytest.raises(InvalidInput):
            store.key_from_url(bad)


def test_objects_exist_copy_locally_and_delete(store: s3.S3Store) -> None:
    key = "results/acme/job.json"
    assert not store.exists(key)
    with pytest.raises(NotFound):
        store.get_bytes(key)
    with pytest.raises(NotFound), store.local_copy(key):
        pass
    store.put_bytes(key, b'{"a": 1}')
    assert store.exists(key)
    with store.local_copy(key) as path:
        assert path.read_bytes() == b'{"a": 1}' and path.name == "job.json"
    assert not path.exists()  # the temporary copy is gone with the context
    with pytest.raises(PayloadTooLarge), store.local_copy(key, max_bytes=7):
        pass
    with store.local_copy(key, max_bytes=8) as path:
        assert path.stat().st_size == 8
    store.delete(key)
    store.delete(key)  # deleting what is gone is fine
    assert not store.exists(key)


def test_put_file_of_many_megabytes_goes_up_in_parts_and_comes_back_whole(store: s3.S3Store, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    data = os.urandom(3 * s3.PART_SIZE + 12345)  # 4 parts
    big.write_bytes(data)
    store.put_file("uploads/acme/5/big.bin", big)
    response = httpx.get(store.sign_url("GET", "uploads/acme/5/big.bin", 60))
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(data).digest()
    with store.local_copy("uploads/acme/5/big.bin") as path:
        assert path.stat().st_size == len(data)


def test_wrong_credentials_are_a_storage_error(seaweed_s3: SeaweedS3) -> None:
    wrong = s3.S3Store(seaweed_s3.bucket, "t", endpoint=seaweed_s3.endpoint, access_key=seaweed_s3.access_key,
                       secret_key="not-the-secret")
    with pytest.raises(StorageError) as info:
        wrong.put_bytes("x.json", b"{}")
    assert info.value.code == "storage_forbidden"


def test_an_s3_url_of_another_bucket_is_read_with_the_configured_credentials(seaweed_s3: SeaweedS3,
                                                                             tmp_path: Path) -> None:
    seaweed_s3.create_bucket(OTHER_BUCKET)
    settings = Settings(data_dir=tmp_path, **{k.removeprefix("VIDINFER_").lower(): v
                                              for k, v in seaweed_s3.env("p").items()})
    s3.S3Store.from_settings(settings, bucket=OTHER_BUCKET).put_bytes("in/video.mp4", b"frames")
    with s3.s3_url_copy(f"s3://{OTHER_BUCKET}/in/video.mp4", settings) as path:
        assert path.read_bytes() == b"frames"
    with pytest.raises(FetchError), s3.s3_url_copy(f"s3://{OTHER_BUCKET}/in/missing.mp4", settings):
        pass
    with pytest.raises(PayloadTooLarge), s3.s3_url_copy(f"s3://{OTHER_BUCKET}/in/video.mp4", settings, 3):
        pass


def test_open_store_follows_storage_url(seaweed_s3: SeaweedS3, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, public_url="http://127.0.0.1:1", secret_key="k")
    assert isinstance(open_store(settings), LocalStore)
    opened = open_store(settings.model_copy(update={"storage_url": seaweed_s3.storage_url("a/b/"),
                                                    "s3_endpoint": seaweed_s3.endpoint}))
    assert isinstance(opened, s3.S3Store) and (opened.bucket, opened.prefix) == (seaweed_s3.bucket, "a/b")
    with pytest.raises(InvalidInput):
        open_store(settings.model_copy(update={"storage_url": "gs://bucket/x"}))
    assert parse_s3_url("s3://bucket/a/b.mp4") == ("bucket", "a/b.mp4")
    assert parse_s3_url("s3://bucket", allow_empty_key=True) == ("bucket", "")


# -- vidinfer serve with its blobs in S3 ---------------------------------------------------------------
COCO = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]
LIMIT = 400_000


@pytest.fixture(scope="module")
def server(seaweed_s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("s3-serve"),
                 env={**seaweed_s3.env(f"serve-{uuid.uuid4().hex[:6]}"), "VIDINFER_MAX_UPLOAD_BYTES": str(LIMIT)})
    srv.cli("models", "add", "acme/people/1", "--builtin", "coco")  # for the roboflow SDK's project calls
    with srv:
        yield srv


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("s3-videos") / "clip.mp4", frames=20, fps=10, size=(96, 64))


@pytest.mark.slow
def test_serve_keeps_uploads_and_results_in_s3(server: Server, seaweed_s3: SeaweedS3, video: Path) -> None:
    key = server.key("acme")
    signed = server.upload(key, video)  # PUT straight to the S3 server
    assert signed.startswith(f"{seaweed_s3.endpoint}/{seaweed_s3.bucket}/") and _sdk_expires(signed) == "3600"
    job = server.submit(key, signed, models=COCO, infer_fps=5)
    assert job.status_code == 200, job.text
    done = server.wait(key, job.json()["job_id"])
    assert done["status"] == 0, done
    assert done["output_signed_url"].startswith(f"{seaweed_s3.endpoint}/{seaweed_s3.bucket}/")
    results = httpx.get(done["output_signed_url"]).json()
    assert results["frame_offset"] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18] and len(results["coco"]) == 10
    # the API's own blob routes serve only local storage
    response = httpx.get(f"{server.url}/blobs/results/acme/x.json")
    assert response.status_code == 404 and set(response.json()["error"]) == {"code", "message"}
    # another workspace cannot use acme's upload, neither by its URL nor as s3://
    rival = server.key("rival")
    own_s3_url = "s3://" + urlsplit(signed).path.lstrip("/")
    for url in (signed, own_s3_url):
        response = server.submit(rival, url)
        assert response.status_code == 404, (url, response.text)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_official_roboflow_sdk_uploads_to_the_presigned_s3_url(server: Server, video: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    import importlib

    roboflow = pytest.importorskip("roboflow", reason="the official roboflow package is in the test extra")
    from test_roboflow_sdk import FastTime, model_of, poll

    monkeypatch.setenv("API_URL", server.url)
    monkeypatch.setenv("ROBOFLOW_CONFIG_DIR", str(tmp_path / "no-config.json"))
    for name in ("ROBOFLOW_REGION", "ROBOFLOW_ENVIRONMENT", "ROBOFLOW_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    roboflow.config.refresh_region_urls()
    monkeypatch.setattr(importlib.import_module("roboflow.models.inference"), "time", FastTime())
    model = model_of(roboflow, server.key("acme"), "people")
    job_id, signed_url, expires = model.predict_video(str(video), fps=5)
    assert "X-Amz-Signature=" in signed_url and str(expires) == "3600"
    results = poll(model, job_id)
    assert results["frame_offset"] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18] and len(results["people"]) == 10


@pytest.mark.slow
def test_serve_reads_s3_input_urls_and_refuses_stored_inputs_over_the_limit(
        server: Server, seaweed_s3: SeaweedS3, video: Path, tmp_path: Path) -> None:
    key = server.key("acme")
    seaweed_s3.create_bucket(OTHER_BUCKET)
    other = s3.S3Store(OTHER_BUCKET, endpoint=seaweed_s3.endpoint, access_key=seaweed_s3.access_key,
                       secret_key=seaweed_s3.secret_key)
    other.put_file("videos/clip.mp4", video)
    done = server.wait(key, server.submit(key, f"s3://{OTHER_BUCKET}/videos/clip.mp4", infer_fps=5).json()["job_id"])
    assert done["status"] == 0, done
    assert len(httpx.get(done["output_signed_url"]).json()["frame_offset"]) == 10

    missing = server.submit(key, f"s3://{OTHER_BUCKET}/videos/missing.mp4").json()["job_id"]
    failed = server.wait(key, missing)
    assert failed["state"] == "failed" and failed["error"]["code"] == "s3_unreachable", failed

    big = tmp_path / "big.mp4"  # a presigned PUT cannot limit the size: the worker refuses it
    big.write_bytes(video.read_bytes() + b"\0" * LIMIT)
    over = server.wait(key, server.submit(key, server.upload(key, big)).json()["job_id"])
    assert over["state"] == "failed" and over["error"]["code"] == "input_too_large", over

    for url, code in (("gs://bucket/x.mp4", "invalid_url"), ("s3://bucket/../x.mp4", "invalid_key"),
                      ("s3://x/y.mp4", "invalid_url")):
        response = server.submit(key, url)
        assert response.status_code == 400 and response.json()["error"]["code"] == code, (url, response.text)


@pytest.mark.slow
def test_moment_thumbnails_and_clips_are_kept_in_s3(server: Server, seaweed_s3: SeaweedS3, video: Path,
                                                     tmp_path: Path) -> None:
    """``/search/thumbnail`` and ``/search/clip`` make their files from the job's S3 upload, store them in the
    bucket and redirect to S3 signed URLs; the second call finds them there."""
    from PIL import Image

    from vidinfer.core.video import probe

    key = server.key("acme")
    job_id = server.submit(key, server.upload(key, video), models=COCO, infer_fps=5).json()["job_id"]
    assert server.wait(key, job_id)["status"] == 0
    bucket_url = f"{seaweed_s3.endpoint}/{seaweed_s3.bucket}/"
    thumb = httpx.get(f"{server.url}/search/thumbnail", params={"api_key": key, "job_id": job_id, "frame": 2})
    assert thumb.status_code == 307 and thumb.headers["location"].startswith(bucket_url)
    assert f"/moments/acme/{job_id}/frame-2.jpg" in thumb.headers["location"]
    image = Image.open(io.BytesIO(httpx.get(thumb.headers["location"]).content))
    assert image.format == "JPEG" and image.size == (320, 214)
    clip = httpx.get(f"{server.url}/search/clip", params={"api_key": key, "job_id": job_id, "start": 0, "end": 1})
    assert clip.status_code == 307 and clip.headers["location"].startswith(bucket_url)
    (tmp_path / "clip.mp4").write_bytes(httpx.get(clip.headers["location"]).content)
    assert probe(str(tmp_path / "clip.mp4")).frame_count == 10
    again = httpx.get(f"{server.url}/search/clip", params={"api_key": key, "job_id": job_id, "start": 0, "end": 1})
    assert again.status_code == 307 and urlsplit(again.headers["location"]).path == urlsplit(
        clip.headers["location"]).path

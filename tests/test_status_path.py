"""The status poll's fast path keeps its meaning: the key cache honours revocation, and the body written
directly is the one ``response_model=JobStatusOut`` answered."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest

from vidinfer.api.app import create_app
from vidinfer.api.schemas import JobStatusOut
from vidinfer.config import Settings
from vidinfer.jobs.store import JobStore
from vidinfer.jobs.view import STATUS_FIELDS, status_body

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about its httpx client
    from starlette.testclient import TestClient

COCO = [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}]


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def test_a_key_revoked_in_the_same_process_stops_at_once_despite_the_cache(tmp_path: Path) -> None:
    store = JobStore(_db(tmp_path), key_cache_ttl=60)
    key = store.create_key("acme")
    assert store.workspace_for_key(key) == "acme"
    assert store.cached_workspace(key) == "acme"  # remembered
    assert store.revoke_key(key[:10]) == 1
    assert store.cached_workspace(key) is None
    assert store.workspace_for_key(key) is None


def test_a_key_revoked_by_another_process_stops_within_the_ttl(tmp_path: Path) -> None:
    api = JobStore(_db(tmp_path), key_cache_ttl=0.5)
    cli = JobStore(_db(tmp_path))  # `vidinfer keys revoke` has its own store, and its own cache
    key = cli.create_key("acme")
    assert api.workspace_for_key(key) == "acme"
    validated = time.monotonic()
    assert cli.revoke_key(key[:10]) == 1
    time.sleep(max(0.0, validated + 0.5 - time.monotonic()) + 0.05)
    assert api.cached_workspace(key) is None
    assert api.workspace_for_key(key) is None


def test_a_ttl_of_zero_reads_the_key_every_call(tmp_path: Path) -> None:
    api = JobStore(_db(tmp_path), key_cache_ttl=0)
    cli = JobStore(_db(tmp_path))
    key = cli.create_key("acme")
    assert api.workspace_for_key(key) == "acme"
    assert api.cached_workspace(key) is None
    cli.revoke_key(key[:10])
    assert api.workspace_for_key(key) is None


def test_unknown_and_revoked_keys_are_not_remembered(tmp_path: Path) -> None:
    store = JobStore(_db(tmp_path), key_cache_ttl=60)
    assert store.workspace_for_key("vi_" + "0" * 40) is None
    key = store.create_key("acme")
    store.revoke_key(key[:10])
    assert store.workspace_for_key(key) is None
    assert store._key_cache == {}


@pytest.fixture
def app_and_jobs(tmp_path: Path) -> tuple[TestClient, JobStore, str, dict[str, str]]:
    settings = Settings(data_dir=tmp_path / "data", public_url="http://testserver", secret_key="s3cret",
                        key_cache_ttl=60)
    settings.data_dir.mkdir()
    store = JobStore(settings.database)
    key = store.create_key("acme")
    ids = {}
    done, _ = store.create("acme", input_url="https://example.com/v.mp4", infer_fps="1", models=COCO)
    store.finish(store.claim("w"), "results/x.json", {"null_frames": 2, "partial": True, "warnings": ["ünïcode"]})
    ids["done"] = done.id
    running, _ = store.create("acme", input_url="https://example.com/v.mp4", infer_fps="1", models=COCO)
    store.claim("w")
    ids["running"] = running.id
    failed, _ = store.create("acme", input_url="https://example.com/v.mp4", infer_fps="1", models=COCO)
    store.fail(store.claim("w"), "decode_failed", "bad_video", "the video \"x\" could not be read: é")
    ids["failed"] = failed.id
    return TestClient(create_app(settings, store)), store, key, ids


def test_the_status_body_is_the_one_the_response_model_answered(app_and_jobs) -> None:  # noqa: ANN001
    client, store, key, ids = app_and_jobs
    with client:
        for state, job_id in ids.items():
            response = client.get("/videoinfer", params={"api_key": key, "job_id": job_id})
            assert response.status_code == 200 and response.headers["content-type"] == "application/json"
            job = store.get(job_id, "acme")
            model = JobStatusOut.model_validate(status_body(job, client.app.state.service.blobs, 7 * 24 * 3600))
            # the bytes FastAPI wrote through response_model: the same fields, the same order, the same JSON
            assert response.content == model.model_dump_json().encode(), state
            assert list(response.json())[:len(STATUS_FIELDS)] == list(STATUS_FIELDS)
        assert client.get("/videoinfer", params={"api_key": key, "job_id": "nope"}).json()["error"]["code"] == \
            "job_not_found"
        spec = client.get("/openapi.json").json()
        ok = spec["paths"]["/videoinfer"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/JobStatusOut"}


def test_a_key_revoked_through_the_apis_store_is_refused_at_once(app_and_jobs) -> None:  # noqa: ANN001
    client, store, key, ids = app_and_jobs
    with client:
        assert client.get("/videoinfer", params={"api_key": key, "job_id": ids["done"]}).status_code == 200
        store.revoke_key(key[:10])
        answer = client.get("/videoinfer", params={"api_key": key, "job_id": ids["done"]})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"

"""API fuzzing: schemathesis generates requests for every operation of a running server's OpenAPI spec.

Every operation is called with a valid key (``?api_key=``), about 25 generated cases each (its examples,
schemathesis's coverage of boundaries and invalid values, then random ones), and every answer must be
no server error (5xx), a status code the spec documents for that operation, and a body matching the
documented schema (success bodies and the ``{"error": {"code", "message"}}`` shape alike). Ids of a
real finished job, the key's workspace and a registered project are offered half of the time, so the
calls get past "not found" to the code behind it. Fields the spec marks ``format: uri`` (``input_url``,
``notify_url``) get URL-shaped strings from ``tests/fuzz_hooks.py``: malformed and odd URLs that plain
random text would rarely produce, so a URL that crashes a parser is found here (``POST /videoinfer`` gets 60
cases, ``VIDINFER_FUZZ_URL_EXAMPLES``). The seed is fixed so a failure reproduces (``VIDINFER_FUZZ_SEED``
changes it, ``VIDINFER_FUZZ_EXAMPLES`` the count per operation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server import Server
from videos import make_video

pytest.importorskip("schemathesis")

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
HOOKS = Path(__file__).with_name("fuzz_hooks.py")  # URL-shaped strings for format: uri
URL_EXAMPLES = int(os.environ.get("VIDINFER_FUZZ_URL_EXAMPLES", "60"))  # cases of POST /videoinfer


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    data = tmp_path_factory.mktemp("fuzz")
    with Server(data / "srv", workers=1, env={"VIDINFER_MAX_UPLOAD_BYTES": "3000000",
                                                "VIDINFER_STATUS_RATE_PER_MINUTE": "100000"}) as srv:
        key = srv.key("acme")
        srv.cli("models", "add", "acme/people/1", "--builtin", "coco")
        video = make_video(data / "clip.mp4", frames=30, size=(160, 120))
        job = srv.wait(key, srv.submit(key, srv.upload(key, video)).json()["job_id"])
        assert job["status"] == 0, job
        yield srv, {"key": key, "job_id": job["job_id"]}


def _config(path: Path, ids: dict[str, str]) -> Path:
    """schemathesis.toml: the key on every call; real ids offered half of the time."""
    def toml(value: str) -> str:
        return json.dumps(value)  # a JSON string is a valid TOML basic string

    lines = ["[parameters]", f'"query.api_key" = {toml(ids["key"])}']
    bindings = {"query.job_id": "jobs", "path.job_id": "jobs", "path.workspace": "workspaces",
                "path.project": "projects", "path.version": "versions"}
    for param, dictionary in bindings.items():
        lines.append(f'"{param}" = {{ dictionary = "{dictionary}", probability = 0.5 }}')
    values = {"jobs": [ids["job_id"]], "workspaces": ["acme"], "projects": ["people"], "versions": ["1"]}
    for name, entries in values.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(entries)}"]
    # the call that takes URLs gets more cases, so the URL-shaped strings of fuzz_hooks.py reach its parsers
    lines += ["[[operations]]", 'include-path-regex = "^/videoinfer$"', 'include-method = "POST"',
              f"generation.max-examples = {URL_EXAMPLES}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        fuzz_target: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    srv, ids = fuzz_target
    config = _config(tmp_path / "schemathesis.toml", ids)
    report = tmp_path / "report.json"
    examples = os.environ.get("VIDINFER_FUZZ_EXAMPLES", "25")
    seed = os.environ.get("VIDINFER_FUZZ_SEED", "20261123")
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"{srv.url}/openapi.json", "--checks", CHECKS, "--max-examples", examples,
               "--phases", "examples,coverage,fuzzing", "--workers", "1", "--seed", seed,
               "--request-timeout", "30", "--report", "json", "--report-json-path", str(report),
               "--no-color"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=tmp_path, check=False,
                         env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "VIDINFER_FUZZ_BASE_URL": srv.url})
    assert report.exists(), out.stdout[-4000:] + out.stderr[-2000:]
    result = json.loads(report.read_text())
    cases, operations = result["test_cases"], result["operations"]
    print(f"schemathesis {result['schemathesis_version']}: {operations['tested']} operations, "
          f"{cases['generated']} requests, {cases['with_failures']} failing, {len(result['errors'])} errors, "
          f"{result['running_time']:.0f} s, seed {seed}")
    spec = httpx.get(f"{srv.url}/openapi.json").json()
    documented = sum(len(ops) for ops in spec["paths"].values())
    assert operations["tested"] == operations["selected"] == documented  # every operation of the spec
    assert cases["generated"] >= 10 * documented
    assert result["failures"] == [] and result["errors"] == [], out.stdout[-6000:]
    assert out.returncode == 0, out.stdout[-6000:]
    # the server survived it all, and no request met an unexpected exception (logged as "unexpected error")
    assert httpx.get(f"{srv.url}/health").status_code == 200
    assert "unexpected error" not in srv.log.read_text(errors="replace")
    assert srv.status(ids["key"], ids["job_id"])["job_id"] == ids["job_id"]


# -- regressions for what the fuzzer found ------------------------------------------------------------
def test_every_error_answer_is_documented_with_the_error_shape(fuzz_target: tuple[Server, dict[str, str]]) -> None:
    """FastAPI documented validation errors as 422 ``HTTPValidationError``; the API answers them 400 with
    ``{"error": ...}``. Routes outside /videoinfer documented no 401/403/404 at all."""
    srv, _ = fuzz_target
    spec = httpx.get(f"{srv.url}/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(spec)
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            errors = {code: answer for code, answer in op["responses"].items() if code >= "400"}
            assert "500" in errors, (method, path)
            for code, answer in errors.items():
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (method, path, code)
            if any(p["name"] == "api_key" for p in op.get("parameters", [])):
                assert "401" in errors, (method, path)


def test_blob_routes_take_no_content_length_parameter_and_any_key(fuzz_target: tuple[Server, dict[str, str]]) -> None:
    """Content-Length was a declared header parameter, so generated requests sent values that did not match
    their bodies; a key with a newline fell through to another route's 405."""
    srv, _ = fuzz_target
    spec = httpx.get(f"{srv.url}/openapi.json").json()
    assert [p["name"] for p in spec["paths"]["/blobs/{key}"]["put"]["parameters"]] == ["key"]
    for method in ("GET", "PUT"):
        response = httpx.request(method, f"{srv.url}/blobs/uploads/a%0Ab.mp4")
        assert response.status_code == 403 and response.json()["error"]["code"] == "unsigned_url", method

"""Each layer imports only what it should, checked in a fresh interpreter.

``import vidinfer`` and the client must work with the base install (httpx,
pydantic): none of the engine's or the server's packages may load. The pure
core must not reach for HTTP or databases.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: what the client install does not have
SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "av", "onnxruntime", "numpy", "cv2",
                   "supervision", "pydantic_settings")  # not click: httpx loads it for its CLI when present
#: what the pure core must never need
OUTSIDE_WORLD = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "httpx", "requests", "vidinfer.api",
                 "vidinfer.jobs", "vidinfer.storage", "vidinfer.sdk")


def loaded_after(code: str) -> set[str]:
    """The top-level and vidinfer modules in ``sys.modules`` after running ``code`` in a new interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize(("code", "forbidden"), [
    ("import vidinfer", (*SERVER_PACKAGES, "httpx", "vidinfer.sdk")),
    ("import vidinfer.errors", (*SERVER_PACKAGES, "httpx")),
    ("import vidinfer, vidinfer.sdk; vidinfer.Client; vidinfer.ModelSpec; vidinfer.JobFailed", SERVER_PACKAGES),
    ("from vidinfer import Client; Client('http://127.0.0.1:9', 'k').close()", SERVER_PACKAGES),
    ("import vidinfer.core.sampling", (*OUTSIDE_WORLD, "av", "onnxruntime", "cv2")),
    ("import vidinfer.core.video, vidinfer.core.results, vidinfer.core.pipeline", OUTSIDE_WORLD),
    # the export writers: no HTTP or database, and pyarrow only when a parquet file is asked for
    ("import vidinfer.export", (*OUTSIDE_WORLD, "pyarrow", "pandas")),
], ids=["package", "errors", "sdk", "client-instance", "core.sampling", "core", "export"])
def test_layer_loads_only_what_it_should(code: str, forbidden: tuple[str, ...]) -> None:
    loaded = loaded_after(code)
    assert not loaded.intersection(forbidden), f"{code!r} loaded {sorted(loaded.intersection(forbidden))}"


def test_the_client_is_there() -> None:
    loaded = loaded_after("import vidinfer; vidinfer.Client")
    assert {"httpx", "vidinfer.sdk.client"} <= loaded


def test_unknown_attribute_is_an_attribute_error() -> None:
    import vidinfer

    with pytest.raises(AttributeError):
        vidinfer.NoSuchThing  # noqa: B018
    assert "Client" in dir(vidinfer)

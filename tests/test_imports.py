"""Each layer imports only what it should: statically, and in a fresh interpreter.

The floors of the package (cli / api -> jobs -> analysis, render, search -> wire,
models -> core, storage, fetch -> config, errors; sdk apart) are import-linter
contracts in pyproject.toml, checked here over every import statement, lazy ones
included. What actually gets loaded is checked in subprocesses: ``import vidinfer``
and the client must work with the base install (httpx, pydantic), so none of the
engine's or the server's packages may load; the pure core must not reach for HTTP
or databases, nor for the model adapters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = ("import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",)

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
    ("import vidinfer.core.video, vidinfer.core.results, vidinfer.core.pipeline",
     (*OUTSIDE_WORLD, "vidinfer.models", "onnxruntime")),
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


def lint_imports(src: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with pyproject.toml's contracts (all, or those named) over the package in ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "200"}
    args = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run([sys.executable, "-c", *LINT_IMPORTS, "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache", *args], capture_output=True, text=True, timeout=120, check=False,
                          cwd=src, env=env)


def test_every_import_points_down_the_floors() -> None:
    out = lint_imports(ROOT / "src")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout


@pytest.mark.parametrize(("module", "line", "contracts"), [
    ("core/results.py", "import vidinfer.jobs.store", ("floors", "core-pure")),
    ("core/video.py", "import httpx", ("core-pure",)),
    ("models/registry.py", "from vidinfer.api import app", ("floors",)),
    ("storage/base.py", "import vidinfer.wire", ("floors",)),
    ("new_thing.py", "import vidinfer.errors", ("floors",)),  # a module on no floor
    ("sdk/client.py", "import vidinfer.core.results", ("sdk-apart",)),
    ("sdk/client.py", "import fastapi", ("sdk-apart",)),
    ("models/clip.py", "import onnxruntime", ("one-onnxruntime-importer",)),
], ids=["core-up-to-jobs", "core-httpx", "models-up-to-api", "storage-up-to-wire", "unplaced-module",
        "sdk-to-core", "sdk-fastapi", "second-onnxruntime-importer"])
def test_a_wrong_import_breaks_its_contract(tmp_path: Path, module: str, line: str,
                                            contracts: tuple[str, ...]) -> None:
    """Each contract can fail: the same check over a copy of the package with one bad import added."""
    shutil.copytree(ROOT / "src" / "vidinfer", tmp_path / "vidinfer", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "vidinfer" / module
    target.write_text((target.read_text() if target.exists() else "") + f"\n{line}\n")
    for contract in contracts:
        out = lint_imports(tmp_path, contract)
        assert out.returncode == 1 and "1 broken" in out.stdout, (contract, out.stdout + out.stderr)
    assert lint_imports(tmp_path).returncode == 1

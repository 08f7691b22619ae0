"""Shared fixtures: small generated videos (see ``tests/videos.py``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from seaweed import seaweed_s3  # noqa: E402,F401  (a session fixture: one S3 server per test run)
from services import pg_database  # noqa: E402,F401  (a fresh PostgreSQL database per test)
from videos import make_video  # noqa: E402


@pytest.fixture
def tmp_video(tmp_path: Path) -> Callable[..., Path]:
    """``tmp_video("name.mkv", **make_video_kwargs)``: a fresh video in this test's tmp dir."""

    def make(name: str = "video.mp4", **kwargs: Any) -> Path:
        return make_video(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def shared_video(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Like ``tmp_video`` but made once per session for the same arguments: treat it as read-only."""
    made: dict[str, Path] = {}
    folder = tmp_path_factory.mktemp("videos")

    def make(name: str = "video.mp4", **kwargs: Any) -> Path:
        key = f"{name}|{sorted(kwargs.items())!r}"
        if key not in made:
            made[key] = make_video(folder / f"{len(made)}-{name}", **kwargs)
        return made[key]

    return make

"""The bad-input corpus (``tests/corpus.py``) through the engine, the CLI and a real ``vidinfer serve``.

Every item ends with a result (status 0, ``partial`` when frames were lost) or one
documented failure; never ``internal_error`` (status 2), never a hang; the worker
that ran the corpus is the one still running, and a normal job after it works.

| item | input | engine / API outcome (CLI exit) |
|---|---|---|
| truncated | MP4, index at the front, cut at 60% | 0, partial: the frames before the cut (3) |
| moov_missing | MP4 cut before its index | 4 `not_a_video`: "without its index (the moov box)" (4) |
| mp4_header_random_tail | 64 bytes of a real MP4, then random | 4 `not_a_video` (4) |
| random_bytes | 50 KB of noise named .mp4 | 4 `not_a_video` (4) |
| zero_bytes | empty file | 4 `not_a_video` (4); the API refuses the upload: 400 `empty_upload` |
| mkv_named_mp4, mp4_named_avi | wrong extension | 0: the content decides, not the name (0) |
| html, json | an HTML page / a JSON error body named .mp4 | 4 `not_a_video` (4) |
| png_still | a PNG named .mp4 | 4 `not_a_video`: "a still image" (4) |
| zip | a ZIP named .mp4 | 4 `not_a_video` (4) |
| y4m_huge | Y4M header 65535x65535 | 4 `not_a_video`: FFmpeg itself refuses the size (4) |
| y4m_big | Y4M header 16000x16000 | 4 `frame_too_large` (limit 8192x8192 pixels), before any packet is read (4) |
| mp4_huge_dims | MP4 tkhd/avc1 claim 65535x65535, H.264 is 64x48 | 0: the codec's size wins (0) |
| mjpeg_big_frames | AVI 64x48, its JPEG frames claim 16000x16000 | 4 `undecodable`: no frame decodes (4) |
| audio_m4a, audio_mp3_cover | audio only (cover art is no video) | 4 `no_video_stream` (4) |
| corrupt_packets | 4 of 30 packets scrambled | 0, partial, `null_frames` 0 (3) |
| raw_h264 | no container timing | 0: frames timed by the codec's rate (0) |
| zero_fps | AVI declaring 0 fps | 0: FFmpeg's default rate (25) times the frames (0) |
| many_streams | 2000 subtitle tracks + a video | 0, probe well under a second (0) |
| absurd_duration | MP4 headers claim 3.5 days | 0: the sample table wins (0) |
| absurd_duration_mkv | MKV header claims 3.5 days, 1 s of frames | 0, partial: no frame index to trust (3) |
| single_frame, 1x1, 3x3, 1921x1081 | tiny and odd sizes | 0 (0) |
| 10bit, yuv444, vp9_alpha, png_rgba_mov | 10-bit, 4:4:4, alpha | 0 (0) |
| mjpeg_avi | MJPEG in AVI | 0 (0) |
| animated_gif | an animated GIF | 0: a GIF with frames and delays is accepted as a video (a still PNG is not) (0) |
| backward_pts | MKV timestamps jump back 1 s | 0: display order kept, times never decrease (0) |
| negative_pts | MPEG-TS starting at -1 s | 0: times from the first frame (0) |
| name_* | `../../x.mp4`, newlines, RTL, 255 UTF-8 bytes, `..` | 0; key `uploads/<workspace>/<id>/<ASCII>` |
| FIFO, symlink to a FIFO (CLI) | `mkfifo` | exit 4 at once: "not a regular file" (never read) |
| symlink to a video (CLI) | | exit 0 |

Matroska has no index of its frames: a header that promises more than the data holds is all that tells
a cut recording from a whole one, so ``absurd_duration_mkv`` is reported as partial (with a warning
naming both durations). An MP4's sample table is its index, so a lying ``mvhd`` changes nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import psutil
import pytest
from corpus import CORPUS, Item, build
from server import Server

from vidinfer.core.pipeline import expected_samples
from vidinfer.core.video import probe
from vidinfer.errors import DecodeError, VidinferError
from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.jobs.states import FAILURE_STATUS, failure_kind
from vidinfer.models.registry import LoadOptions, ModelRegistry
from vidinfer.storage.base import check_key

FPS = Fraction(1)
#: seconds any one item may take through the engine (all are tiny: a hang shows as a failure here)
ITEM_SECONDS = 20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> list:
    registry = ModelRegistry(tmp_path_factory.mktemp("reg") / "models.json", LoadOptions(threads=1))
    return resolve_runs(registry, [ModelRequest("coco", "coco", {})])


def _on_disk(item: Item, path: Path) -> Path:
    """The item's file, under its hostile name where it has one that can be a file name."""
    name = item.upload_name
    if name is None or "/" in name or name in (".", ".."):
        return path
    hostile = path.parent / name
    shutil.copyfile(path, hostile)
    return hostile


@pytest.mark.parametrize("item", CORPUS, ids=[i.kind for i in CORPUS])
def test_engine(item: Item, corpus: dict[str, Path], coco: list) -> None:
    path = _on_disk(item, corpus[item.kind])
    expect = item.expect
    started = time.monotonic()
    try:
        out = run_inference(str(path), coco, FPS, decode_threads=1)
    except VidinferError as exc:
        assert expect.status != 0, f"{item.kind}: expected a result, got {exc.code}: {exc.message}"
        assert FAILURE_STATUS[failure_kind(exc)] == expect.status and exc.code == expect.code, (exc.code, exc)
        assert "\n" not in exc.message.replace(str(path), "") and exc.message.strip()
    else:
        assert expect.status == 0, f"{item.kind}: expected {expect.code}, got a result"
        result = out.result
        assert result.partial == expect.partial, result.warnings
        assert result.failed_frames == 0
        if item.frames is not None:
            assert out.info.frame_count == item.frames
        samples = len(result.frame_offset)
        if expect.partial:
            assert result.warnings and samples <= expected_samples(out.info, FPS)
        else:
            assert samples == expected_samples(out.info, FPS) >= 1, result.warnings
        assert result.time_offset == sorted(result.time_offset)
        assert len(out.results_json["coco"]) == samples
    assert time.monotonic() - started < ITEM_SECONDS


def test_many_streams_probe_is_quick(corpus: dict[str, Path]) -> None:
    started = time.monotonic()
    info = probe(str(corpus["many_streams"]))
    assert time.monotonic() - started < 3 and info.frame_count == 10


def test_frame_size_limit_comes_before_reading_packets(corpus: dict[str, Path]) -> None:
    with pytest.raises(DecodeError, match="16000x16000") as caught:
        probe(str(corpus["y4m_big"]))
    assert caught.value.code == "frame_too_large"


# -- the CLI: what only a local path can be ----------------------------------------------------

def _cli(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIDINFER_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "vidinfer.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_cli_refuses_a_fifo_and_follows_a_symlink(corpus: dict[str, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "to_pipe.mp4"
    to_fifo.symlink_to(fifo)
    video = tmp_path / "link.mp4"
    video.symlink_to(corpus["mkv_named_mp4"])
    for path in (fifo, to_fifo):
        proc = _cli("probe", str(path), data_dir=tmp_path / "d", timeout=30)  # a hang fails here
        assert proc.returncode == 4 and "not a regular file" in proc.stderr, proc.stderr
    proc = _cli("infer", str(video), "-m", "coco", "--fps", "1", "-o", str(tmp_path / "r.json"), "-q",
                data_dir=tmp_path / "d")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kind", ["y4m_big", "mjpeg_big_frames", "corrupt_packets"])
def test_cli_exit_codes(kind: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    item = next(i for i in CORPUS if i.kind == kind)
    proc = _cli("infer", str(corpus[kind]), "-m", "coco", "--fps", "1", "-o", str(tmp_path / "r.json"), "-q",
                data_dir=tmp_path / "d")
    assert proc.returncode == item.expect.cli_exit, proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_error_stays_on_one_line_whatever_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "evil\nname\r.mp4"
    path.write_bytes(b"<html>not a video</html>" * 10)
    proc = _cli("infer", str(path), "-m", "coco", "-q", data_dir=tmp_path / "d")
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "evil\\nname\\r.mp4" in lines[0], proc.stderr


# -- one real server, one worker: the whole corpus as jobs ------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("bad-inputs-data"), workers=1) as srv:
        yield srv


def _workers(server: Server) -> set[int]:
    assert server.proc is not None
    return {p.pid for p in psutil.Process(server.proc.pid).children()
            if any("spawn_main" in part for part in p.cmdline())}  # not the resource tracker


def _upload(server: Server, key: str, item: Item, path: Path) -> tuple[str, httpx.Response]:
    name = item.upload_name if item.upload_name is not None else path.name
    response = httpx.post(f"{server.url}/video_upload_signed_url", params={"api_key": key},
                          json={"file_name": name}, timeout=30)
    assert response.status_code == 200, response.text
    url = response.json()["signed_url"]
    put = httpx.put(url, content=path.read_bytes(), headers={"Content-Type": "application/octet-stream"},
                    timeout=30)
    return url, put


def test_service_survives_the_corpus(server: Server, corpus: dict[str, Path]) -> None:
    key = server.key("acme")
    workers = _workers(server)
    assert len(workers) == 1
    jobs: dict[str, str] = {}
    for item in CORPUS:
        url, put = _upload(server, key, item, corpus[item.kind])
        stored = check_key(unquote(urlsplit(url).path).removeprefix("/blobs/"))
        assert stored.startswith("uploads/acme/") and stored.count("/") == 3, stored
        assert stored.isascii() and len(stored.rsplit("/", 1)[1].encode()) <= 120, stored
        if item.expect.upload is not None:
            assert put.status_code == item.expect.upload, put.text
            continue
        assert put.status_code == 200, put.text
        response = server.submit(key, url, infer_fps=1)
        assert response.status_code == 200, response.text
        jobs[item.kind] = response.json()["job_id"]
    # nothing landed outside the workspace's uploads
    uploads = server.data_dir / "blobs" / "uploads"
    assert {p.name for p in uploads.iterdir()} == {"acme"}
    assert len([p for p in (uploads / "acme").rglob("*") if p.is_file()]) == len(jobs)
    assert not list(server.data_dir.parent.glob("x.mp4")) and not list(server.data_dir.glob("x.mp4"))

    deadline = time.monotonic() + 120  # every job together: a hang fails here, not at the CI timeout
    outcomes = {}
    for item in CORPUS:
        if item.kind in jobs:
            outcomes[item.kind] = server.wait(key, jobs[item.kind], timeout=max(1.0, deadline - time.monotonic()))
    wrong = {}
    for kind, status in outcomes.items():
        expect = next(i for i in CORPUS if i.kind == kind).expect
        got = (status["status"], (status.get("error") or {}).get("code"), status.get("partial", False))
        if got != (expect.status, expect.code, expect.partial) or status["attempts"] != 1:
            wrong[kind] = status
        if status["status"] == 0:
            assert status["null_frames"] == 0, status
        else:
            assert str(server.data_dir) not in status["error"]["message"], status
    assert not wrong, wrong
    # the same worker process ran every job (none died and was restarted), and it still works
    assert _workers(server) == workers
    assert "died" not in server.log.read_text()
    fine = next(i for i in CORPUS if i.kind == "mkv_named_mp4")
    url, put = _upload(server, key, fine, corpus[fine.kind])
    put.raise_for_status()
    status = server.wait(key, server.submit(key, url, infer_fps=1).json()["job_id"], timeout=60)
    assert status["status"] == 0 and status["frames_done"] == 3 and not status["partial"], status

"""Real-world AVI quirks (issue 14): DivX/Xvid packed B-frames, sparse captures, and timestamps that
jump ahead and back, from probe to infer to render, in the CLI and the API."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import httpx
import pytest
from quirks_avi import PACKED_FPS, SPARSE_FPS, make_packed_avi, make_sparse_avi, make_swapped_pts_mkv, sparse_slots
from server import Server
from videos import decode_reference, frame_label, reference_samples

from vidinfer.core.mpeg4 import PictureCounter
from vidinfer.core.video import DecodeReport, iter_frames, probe
from vidinfer.errors import EXIT_PARTIAL
from vidinfer.render import render_video

PACKED_FRAMES = 48


def run_cli(*args: str, data_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIDINFER_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "vidinfer.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_packed_avi(tmp_path_factory.mktemp("avi") / "divx.avi", frames=PACKED_FRAMES)


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sparse_avi(tmp_path_factory.mktemp("avi") / "sparse.avi")


def _output_frames(path: Path) -> list[tuple[int, int]]:
    """(pts, label) of every frame of a rendered file, decoded by plain PyAV."""
    with av.open(str(path)) as container:
        return [(frame.pts, frame_label(frame)) for frame in container.decode(video=0)]


def test_the_packed_avi_is_what_divx_writes(packed: Path) -> None:
    """The maker's file: one packet more than pictures, P+B packets each followed by an N-VOP."""
    with av.open(str(packed)) as container:
        stream = container.streams.video[0]
        counter = PictureCounter(stream.codec_context.extradata)
        pictures = [counter.pictures(bytes(p)) for p in container.demux(stream) if p.size]
    assert len(pictures) == PACKED_FRAMES + 1 and sum(pictures) == PACKED_FRAMES
    assert pictures[:5] == [1, 0, 2, 0, 2]
    assert [r.label for r in decode_reference(packed)] == list(range(PACKED_FRAMES))


def test_packed_b_frames_count_pictures_not_packets(packed: Path) -> None:
    info = probe(str(packed))
    assert info.frame_count == PACKED_FRAMES and info.fps == PACKED_FPS and info.damage is None
    report = DecodeReport()
    got = [(f.index, f.time, frame_label(f.frame)) for f in iter_frames(info, report=report)]
    assert got == [(i, Fraction(i, PACKED_FPS), i) for i in range(PACKED_FRAMES)]
    assert report.errors == 0 and not report.messages


def test_cli_infer_on_a_healthy_packed_avi_is_whole(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run_cli("infer", str(packed), "-m", "coco", "--fps", "4", "-o", str(out), "-q", data_dir=tmp_path / "d")
    assert proc.returncode == 0, proc.stderr
    assert "lost" not in proc.stderr
    results = json.loads(out.read_text())
    assert results["frame_offset"] == list(range(0, PACKED_FRAMES, 3))
    assert results["time_offset"] == [k / 4 for k in range(PACKED_FRAMES // 3)]


def test_cli_infer_on_a_truncated_packed_avi_is_partial(packed: Path, tmp_path: Path) -> None:
    with av.open(str(packed)) as container:  # cut in the middle of the 30th packet
        at = [p.pos for p in container.demux(video=0) if p.size][30] + 10
    cut = tmp_path / "cut.avi"
    cut.write_bytes(packed.read_bytes()[:at])
    proc = run_cli("infer", str(cut), "-m", "coco", "--fps", "4", "-o", str(tmp_path / "r.json"), "-q",
                   data_dir=tmp_path / "d")
    assert proc.returncode == EXIT_PARTIAL, proc.stderr
    assert "frames were lost after" in proc.stderr
    assert 3 < len(json.loads((tmp_path / "r.json").read_text())["frame_offset"]) < PACKED_FRAMES // 3


def test_decoder_timestamps_that_jump_ahead_and_back_lose_no_frame(tmp_path: Path) -> None:
    """Two frames stamped with each other's times: the decoder's timestamps skip one and then come
    back to it; every frame was decoded, so nothing is reported lost."""
    info = probe(str(make_swapped_pts_mkv(tmp_path / "swapped.mkv")))
    report = DecodeReport()
    frames = [(f.index, f.time, frame_label(f.frame)) for f in iter_frames(info, report=report)]
    assert [label for _, _, label in frames] == list(range(40))
    assert [t for _, t, _ in frames] == sorted(t for _, t, _ in frames)
    assert report.errors == 0 and not report.messages


def test_render_gives_strictly_increasing_timestamps_when_input_times_repeat(tmp_path: Path) -> None:
    """The swapped frames decode with one display time: the MP4 muxer refused the second (a crash)."""
    video = make_swapped_pts_mkv(tmp_path / "swapped.mkv")
    results = {"frame_offset": [0, 20], "time_offset": [0.0, 20 / PACKED_FPS], "m": [{"predictions": []}] * 2}
    stats = render_video(str(video), results, tmp_path / "out.mp4")
    frames = _output_frames(tmp_path / "out.mp4")
    assert stats.frames == 40 and [label for _, label in frames] == list(range(40))
    pts = [p for p, _ in frames]
    assert all(b > a for a, b in itertools.pairwise(pts)), pts


def test_cli_render_on_a_packed_avi(packed: Path, tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"frame_offset": [0, 24], "time_offset": [0.0, 2.0],
                                   "m": [{"predictions": []}] * 2}))
    out = tmp_path / "out.mp4"
    proc = run_cli("render", str(packed), str(results), "-o", str(out), data_dir=tmp_path / "d")
    assert proc.returncode == 0, proc.stderr
    frames = _output_frames(out)
    assert [label for _, label in frames] == list(range(PACKED_FRAMES))
    pts = [p for p, _ in frames]
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    assert probe(str(out)).frame_count == PACKED_FRAMES


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with Server(tmp_path_factory.mktemp("avi-data"), workers=1) as srv:
        yield srv


def test_api_job_on_a_packed_avi_is_whole_and_renders(server: Server, packed: Path, tmp_path: Path) -> None:
    key = server.key("acme")
    job_id = server.submit(key, server.upload(key, packed), infer_fps=4).json()["job_id"]
    status = server.wait(key, job_id)
    assert status["status"] == 0 and not status["partial"] and not status.get("warnings"), status
    params = {"api_key": key, "job_id": job_id}
    assert httpx.post(f"{server.url}/videoinfer/render", params=params, json={}).status_code == 200
    done = server.wait_render(key, job_id)
    assert done["status"] == 0, done
    (tmp_path / "rendered.mp4").write_bytes(httpx.get(done["rendered_signed_url"], timeout=60).content)
    frames = _output_frames(tmp_path / "rendered.mp4")  # boxes may be drawn over the labels: count frames
    assert len(frames) == PACKED_FRAMES and all(b[0] > a[0] for a, b in itertools.pairwise(frames))


def test_api_render_failure_names_no_server_path_nor_raw_exception(server: Server, packed: Path) -> None:
    """A forced failure: results that a bug in the renderer trips over (a frame_offset not a number)."""
    key = server.key("acme")
    job_id = server.submit(key, server.upload(key, packed), infer_fps=4).json()["job_id"]
    assert server.wait(key, job_id)["status"] == 0
    found = [p for p in server.data_dir.rglob(f"{job_id}.json") if "results" in p.parts]
    assert len(found) == 1, found
    found[0].write_text(json.dumps({"frame_offset": [0, "x"], "time_offset": [0, 1]}))
    params = {"api_key": key, "job_id": job_id}
    assert httpx.post(f"{server.url}/videoinfer/render", params=params, json={}).status_code == 200
    failed = server.wait_render(key, job_id)
    error = failed["error"]
    assert failed["state"] == "failed" and error["code"] == "internal_error", failed
    message = error["message"]
    assert message and "/" not in message and "ValueError" not in message and "'x'" not in message, message


def test_sparse_avi_is_judged_by_its_declared_rate(sparse: Path, tmp_path: Path) -> None:
    info = probe(str(sparse))
    slots = sparse_slots()
    assert info.frame_count == len(slots) and info.fps < 5
    assert info.declared_fps == SPARSE_FPS and info.max_infer_fps == SPARSE_FPS
    out = tmp_path / "r.json"
    proc = run_cli("infer", str(sparse), "-m", "coco", "-o", str(out), "-q", data_dir=tmp_path / "d")  # --fps 5
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    times = [Fraction(s, SPARSE_FPS) for s in slots]
    chosen = reference_samples(times, Fraction(5))
    # frame_offset: the picture's index among the stored pictures (display order); time_offset: its time
    assert results["frame_offset"] == chosen
    assert results["time_offset"] == [round(float(times[i]), 4) for i in chosen]

    refused = run_cli("infer", str(sparse), "-m", "coco", "--fps", "16", "-o", str(tmp_path / "x.json"), "-q",
                      data_dir=tmp_path / "d")
    assert refused.returncode != 0 and "above the video's frame rate 15" in refused.stderr, refused.stderr

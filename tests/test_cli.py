"""The ``vidinfer`` command as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from onnx_graphs import channel_mean_classifier
from videos import make_audio, make_video

from vidinfer.core.video import probe
from vidinfer.errors import EXIT_PARTIAL


def run_cli(*args: str, data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIDINFER_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "vidinfer.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of real photos (the demo's first scenes): the astronaut, then the cat."""
    from vidinfer.demo import build_demo_video

    return build_demo_video(tmp_path_factory.mktemp("cli") / "clip.mp4")


class _Handler(BaseHTTPRequestHandler):
    video: bytes = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/video.mp4":
            body, ctype = self.video, "video/mp4"
        else:
            body, ctype = b"<html><body>Sign in</body></html>", "text/html"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server(clip: Path) -> Iterator[str]:
    _Handler.video = clip.read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_infer_writes_results_and_a_summary(clip: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    # no --model: coco, as the demo
    proc = run_cli("infer", str(clip), "--fps", "2", "--end", "4", "-o", str(out), "-q", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["frame_offset"] == [0, 15, 30, 45, 60, 75, 90, 105]
    assert results["time_offset"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert len(results["coco"]) == 8
    info = probe(str(clip))  # the whole video, whatever range was inferred
    assert results["video"] == {"width": info.width, "height": info.height, "frame_count": info.frame_count,
                                "duration": round(info.duration, 4), "fps": round(float(info.fps), 4)}
    assert "8 frames; coco: " in proc.stdout and "person" in proc.stdout and "cat" in proc.stdout
    assert "frames/s" in proc.stdout


def test_several_models_each_under_its_own_key(clip: Path, data_dir: Path, tmp_path: Path) -> None:
    added = run_cli("models", "add", "people", "--builtin", "coco", data_dir=data_dir)
    assert added.returncode == 0, added.stderr
    listed = run_cli("models", "list", data_dir=data_dir)
    assert "people" in listed.stdout and "coco" in listed.stdout
    out = tmp_path / "r.json"
    proc = run_cli("infer", str(clip), "-m", "coco", "-m", "people:classes=person,confidence=0.5", "--fps", "1",
                   "--end", "4", "-o", str(out), "-q", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert set(results) == {"frame_offset", "time_offset", "video", "coco", "people"}
    people = {p["class"] for e in results["people"] for p in e["predictions"]}
    coco = {p["class"] for e in results["coco"] for p in e["predictions"]}
    assert people == {"person"} and {"person", "cat"} <= coco


def test_infer_from_a_url(http_server: str, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run_cli("infer", f"{http_server}/video.mp4", "-m", "coco", "--fps", "1", "--end", "2", "-o", str(out),
                   "-q", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["frame_offset"] == [0, 30]


def test_probe_prints_exact_fps(tmp_video: Callable[..., Path], data_dir: Path) -> None:
    video = tmp_video("p.mp4", frames=30, fps=Fraction(30000, 1001), size=(64, 48))
    proc = run_cli("probe", str(video), "--json", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["fps"] == "30000/1001" and info["frame_count"] == 30 and info["codec"] == "h264"


def _unsupported_onnx(path: Path) -> Path:
    """A valid ONNX graph whose output is no YOLO layout: Identity on the image."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


BadCase = Callable[[Path, Callable[..., Path]], list[str]]

BAD_INPUTS: list[tuple[str, BadCase, int, str]] = [
    ("missing file", lambda d, mk: ["infer", str(d / "nope.mp4"), "-m", "coco"], 2, "no such file"),
    ("not a video", lambda d, mk: ["infer", str(_write(d / "notes.mp4", b"hello " * 100)), "-m", "coco"], 4,
     "not a readable video"),
    ("empty file", lambda d, mk: ["infer", str(_write(d / "empty.mp4", b"")), "-m", "coco"], 4, "empty"),
    ("audio only", lambda d, mk: ["infer", str(make_audio(d / "a.m4a")), "-m", "coco"], 4, "no video stream"),
    ("fps zero", lambda d, mk: ["infer", str(mk("v.mp4", frames=10)), "-m", "coco", "--fps", "0"], 2,
     "greater than 0"),
    ("fps negative", lambda d, mk: ["infer", str(mk("v.mp4", frames=10)), "-m", "coco", "--fps", "-3"], 2,
     "greater than 0"),
    ("fps above video", lambda d, mk: ["infer", str(mk("v.mp4", frames=10)), "-m", "coco", "--fps", "31"], 2,
     "above the video's frame rate"),
    ("fps not a number", lambda d, mk: ["infer", str(mk("v.mp4", frames=10)), "-m", "coco", "--fps", "fast"], 2,
     "must be a number"),
    ("unknown model", lambda d, mk: ["infer", str(mk("v.mp4", frames=10)), "-m", "nosuchmodel"], 5,
     "unknown model"),
    ("unsupported onnx", lambda d, mk: ["infer", str(mk("v.mp4", frames=10)), "-m",
                                        str(_unsupported_onnx(d / "weird.onnx"))], 5, ""),
    ("not onnx", lambda d, mk: ["infer", str(mk("v.mp4", frames=10)), "-m", str(_write(d / "x.onnx", b"junk"))],
     5, ""),
    ("bad param", lambda d, mk: ["infer", str(mk("v.mp4", frames=10)), "-m", "coco:confidence=7"], 2,
     "confidence must be"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("case", "args", "code", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_clear_line(case: str, args: BadCase, code: int, message: str, tmp_path: Path,
                                        tmp_video: Callable[..., Path], data_dir: Path) -> None:
    proc = run_cli(*args(tmp_path, tmp_video), "-q", data_dir=data_dir, timeout=60)
    assert proc.returncode == code, (case, proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path: Path, data_dir: Path) -> None:
    proc = run_cli("--debug", "infer", str(tmp_path / "nope.mp4"), "-m", "coco", data_dir=data_dir)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.parametrize("path", ["/html", "/missing-page"])
def test_url_that_returns_html_is_refused(http_server: str, path: str, data_dir: Path) -> None:
    proc = run_cli("infer", f"{http_server}{path}", "-m", "coco", "-q", data_dir=data_dir)
    assert proc.returncode == 4 and "not a video" in proc.stderr


def test_unreachable_url_fails_fast(data_dir: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli("infer", f"http://127.0.0.1:{port}/v.mp4", "-m", "coco", "-q", data_dir=data_dir, timeout=60)
    assert proc.returncode == 4 and "cannot fetch" in proc.stderr


def test_truncated_video_keeps_what_decodes(tmp_video: Callable[..., Path], data_dir: Path, tmp_path: Path) -> None:
    video = tmp_video("t.mp4", frames=90, size=(160, 120), container_options={"movflags": "faststart"})
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "r.json"
    proc = run_cli("infer", str(video), "-m", "coco", "--fps", "5", "-o", str(out), "-q", data_dir=data_dir)
    assert proc.returncode == EXIT_PARTIAL, proc.stderr
    assert "frames were lost after" in proc.stderr
    results = json.loads(out.read_text())
    assert 0 < len(results["frame_offset"]) < 15


# -- ranges, outputs, closing lines, noise -----------------------------------------------------------
@pytest.fixture(scope="module")
def mean_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier (an ONNX graph) that answers at once: its key is ``mean``."""
    return channel_mean_classifier(tmp_path_factory.mktemp("cli-models") / "mean.onnx")


def _one_error_line(proc: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, repr(proc.stderr)
    assert message in proc.stderr


def test_a_start_past_the_end_is_refused_before_anything_is_written(mean_model: Path, data_dir: Path,
                                                                      tmp_path: Path) -> None:
    from vidinfer.core.pipeline import ModelRun
    from vidinfer.errors import InvalidInput
    from vidinfer.inference import run_inference
    from vidinfer.models.onnx_yolo import load_onnx_model

    video = make_video(tmp_path / "v.mp4", frames=30)  # 1 s
    out = tmp_path / "r.json"
    out.write_text('{"previous": "results"}')
    proc = run_cli("infer", str(video), "-m", str(mean_model), "--start", "100", "-o", str(out), "-q",
                   data_dir=data_dir)
    _one_error_line(proc, 2, "start (100s) is at or past the end of the video (1.000s)")
    assert out.read_text() == '{"previous": "results"}' and proc.stdout == ""
    # the same check where the service's workers run jobs
    with pytest.raises(InvalidInput) as refused:
        run_inference(str(video), [ModelRun("mean", load_onnx_model(str(mean_model)))], Fraction(5), start=1.0)
    assert refused.value.code == "invalid_range"


def test_an_unwritable_output_is_refused_before_the_run(mean_model: Path, data_dir: Path, tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", frames=30)
    (tmp_path / "file").write_text('{"frame_offset": [0], "time_offset": [0.0]}')  # a results file
    for command in (["infer", str(video), "-m", str(mean_model)], ["render", str(video), str(tmp_path / "file")]):
        proc = run_cli(*command, "-o", str(tmp_path / "file" / "out"), "-q", data_dir=data_dir)
        _one_error_line(proc, 2, f"cannot write {tmp_path / 'file' / 'out'}: {tmp_path / 'file'} is a file")
        assert proc.stdout == ""
    # written whole, under its name, and nothing left beside it
    proc = run_cli("infer", str(video), "-m", str(mean_model), "-o", str(tmp_path / "new" / "r.json"), "-q",
                   data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path / "new") == ["r.json"] and json.loads((tmp_path / "new" / "r.json").read_text())


def test_the_closing_line_and_summary_say_what_a_classifier_found(mean_model: Path, data_dir: Path,
                                                                  tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", frames=30)
    out = tmp_path / "r.json"
    proc = run_cli("infer", str(video), "-m", str(mean_model), "-o", str(out), "-q", data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "5 frames; mean: top classes " in proc.stdout and "none" not in proc.stdout, proc.stdout
    summary = run_cli("summary", str(out), data_dir=data_dir)
    assert summary.returncode == 0 and "mean: top classes " in summary.stdout, summary.stdout
    assert "no detections" not in summary.stdout
    # lines, zones and tracking need boxes: an error, not an empty count
    for option in (["--line", "0,0,10,10"], ["--zone", "0,0,10,0,10,10"], ["--track"]):
        proc = run_cli("infer", str(video), "-m", str(mean_model), *option, "-o", str(tmp_path / "x.json"),
                       "-q", data_dir=data_dir)
        _one_error_line(proc, 2, "need a detection model")
        assert not (tmp_path / "x.json").exists()


def test_tflite_runs_and_errors_print_no_noise(data_dir: Path, tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", frames=30)
    proc = run_cli("infer", str(video), "-m", "imagenet", "--fps", "2", "-o", str(tmp_path / "r.json"),
                   data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "imagenet: top classes" in proc.stdout
    # with the progress bar on (no -q), an error is its one line: no blank line before it
    for args in (["infer", str(tmp_path / "nope.mp4")], ["infer", str(video), "-m", "imagenet", "--start", "5"]):
        proc = run_cli(*args, data_dir=data_dir)
        _one_error_line(proc, 2, "")

"""Rendering predictions onto video: pixels, timing, audio, interpolation, ranges, the CLI and the API."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from server import Server
from videos import decode_reference, make_video

from vidinfer.core.video import probe
from vidinfer.errors import InvalidInput
from vidinfer.render import Timeline, drawable_keys, interpolate, overlays, parse_entry, render_video

SIZE = (320, 240)
#: a checkerboard of the label grid's 4x4 blocks (80x60 px at SIZE): strong edges everywhere
CHECKER = 0x5A5A


def _pred(cx: float, cy: float, w: float, h: float, cls: str = "person", conf: float = 0.9,
          **extra: Any) -> dict[str, Any]:
    return {"x": cx, "y": cy, "width": w, "height": h, "confidence": conf, "class": cls, "class_id": 0,
            "detection_id": "d", **extra}


def _results(offsets: list[int], fps: float, preds: list[list[dict[str, Any]]], key: str = "m") -> dict[str, Any]:
    return {"frame_offset": offsets, "time_offset": [round(o / fps, 4) for o in offsets],
            key: [{"time": 0.01, "image": {"width": SIZE[0], "height": SIZE[1]}, "predictions": p} for p in preds]}


def _frames(path: Path) -> list[np.ndarray]:
    """Every frame of ``path`` as RGB."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _colour(rgb: np.ndarray) -> np.ndarray:
    """Saturation: how far a pixel is from grey (the test videos are grey; annotations are coloured)."""
    rgb = rgb.astype(np.int16)
    return rgb.max(axis=-1) - rgb.min(axis=-1)


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("render") / "checker.mp4", frames=30, size=SIZE,
                      labels=[CHECKER] * 30)


def test_a_box_is_drawn_where_the_detection_is(checker: Path, tmp_path: Path) -> None:
    x0, y0, x1, y1 = 120, 100, 200, 180
    results = _results([0, 15], 30, [[_pred(160, 140, 80, 80)]] * 2)
    stats = render_video(str(checker), results, tmp_path / "out.mp4")
    assert stats.frames == 30
    frame = _frames(tmp_path / "out.mp4")[10]
    sat = _colour(frame)
    # the four edges of the box are coloured along their whole length (within 3 px of where they belong)
    assert (sat[y0 + 10: y1 - 10, x0 - 3: x0 + 4] > 60).any(axis=1).mean() > 0.95
    assert (sat[y0 + 10: y1 - 10, x1 - 3: x1 + 4] > 60).any(axis=1).mean() > 0.95
    assert (sat[y1 - 3: y1 + 4, x0 + 10: x1 - 10] > 60).any(axis=0).mean() > 0.95
    assert (sat[y0 - 3: y0 + 4, x0 + 10: x1 - 10] > 60).any(axis=0).mean() > 0.95
    # inside the box and far from it, the video is untouched (grey)
    assert (sat[y0 + 10: y1 - 10, x0 + 10: x1 - 10] > 60).mean() < 0.01
    assert (sat[:, 240:] > 40).mean() < 0.001 and (sat[200:, :100] > 40).mean() < 0.001


def test_blur_lowers_the_variance_of_the_blurred_class_only(checker: Path, tmp_path: Path) -> None:
    person, car = (40, 30, 120, 90), (200, 150, 280, 210)  # each straddles a block corner of the checkerboard
    boxes = [_pred(80, 60, 80, 60, "person"), _pred(240, 180, 80, 60, "car")]
    render_video(str(checker), _results([0], 30, [boxes]), tmp_path / "out.mp4", blur=["person"])
    source, rendered = _frames(checker)[5], _frames(tmp_path / "out.mp4")[5]

    def var(frame: np.ndarray, box: tuple[int, int, int, int]) -> float:
        x0, y0, x1, y1 = box
        return float(frame[y0 + 8: y1 - 8, x0 + 8: x1 - 8].astype(np.float32).mean(axis=-1).var())

    assert var(source, person) > 2000
    assert var(rendered, person) < 0.5 * var(source, person)
    assert var(rendered, car) > 0.8 * var(source, car)


def test_output_keeps_fps_frame_count_timestamps_and_audio(tmp_path: Path) -> None:
    fps = Fraction(30000, 1001)
    src = make_video(tmp_path / "in.mp4", frames=45, fps=fps, size=SIZE, audio=True, bframes=2)
    results = _results([0, 15, 30], float(fps), [[_pred(100, 100, 50, 50)]] * 3)
    stats = render_video(str(src), results, tmp_path / "out.mp4")
    before, after = probe(str(src)), probe(str(tmp_path / "out.mp4"))
    assert (after.fps, after.frame_count, after.has_audio, after.codec) == (fps, 45, True, "h264")
    assert stats.audio == "copy"
    assert [f.time for f in decode_reference(tmp_path / "out.mp4")] == [f.time for f in decode_reference(src)]
    with av.open(str(tmp_path / "out.mp4")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.pix_fmt == "yuv420p" and audio.codec_context.name == "aac"
        assert abs(float(audio.duration * audio.time_base) - before.duration) < 0.1
    # +faststart: the index (moov) comes before the media data, so a browser can start playing at once
    head = (tmp_path / "out.mp4").read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < head.find(b"mdat") or head.find(b"mdat") == -1


def test_variable_frame_rate_keeps_every_frame_time(tmp_path: Path) -> None:
    times = [0.0, 0.04, 0.1, 0.12, 0.2, 0.33, 0.34, 0.5, 0.52, 0.7]
    src = make_video(tmp_path / "vfr.mkv", frames=len(times), pts=times, size=SIZE)
    render_video(str(src), _results([0, 5], 10, [[_pred(100, 100, 40, 40)]] * 2), tmp_path / "out.mp4")
    assert [f.time for f in decode_reference(tmp_path / "out.mp4")] == [f.time for f in decode_reference(src)]


def test_audio_that_mp4_cannot_carry_is_reencoded_to_aac(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.avi", frames=30, size=SIZE, audio=True)  # MP2 audio in AVI
    stats = render_video(str(src), _results([0], 30, [[]]), tmp_path / "out.mp4")
    assert stats.audio == "aac"
    with av.open(str(tmp_path / "out.mp4")) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        assert 0.8 < float(audio.duration * audio.time_base) < 1.3
    assert probe(str(tmp_path / "out.mp4")).frame_count == 30


def test_a_tracked_box_is_interpolated_between_samples_and_untracked_ones_are_carried(
        checker: Path, tmp_path: Path) -> None:
    # samples at frames 0 and 10: the tracked box moves from x=60 to x=260 (centres), the other stays
    tracked = [_pred(60, 190, 40, 40, tracker_id=7), _pred(260, 190, 40, 40, tracker_id=7)]
    still = _pred(160, 60, 40, 40, "car")
    results = _results([0, 10], 30, [[tracked[0], still], [tracked[1]]])
    render_video(str(checker), results, tmp_path / "out.mp4", blur=())
    frame = _frames(tmp_path / "out.mp4")[5]
    sat = _colour(frame) > 60
    rows = slice(180, 200)  # the box's middle rows: clear of its label above it
    # halfway: the box's left and right edges at 160 -/+ 20, none at the first sample's place
    assert sat[rows, 137:144].any(axis=1).mean() > 0.95 and sat[rows, 177:184].any(axis=1).mean() > 0.95
    assert sat[rows, 36:45].mean() < 0.05 and sat[rows, 236:245].mean() < 0.05
    # the untracked car is carried forward from sample 0 until sample 1 replaces it
    assert sat[50:70, 137:144].any(axis=1).mean() > 0.95
    assert _colour(_frames(tmp_path / "out.mp4")[12])[50:70, 137:144].max() < 60


def test_interpolate_moves_polygons_and_keypoints_with_the_box() -> None:
    a = parse_entry({"predictions": [_pred(10, 10, 10, 10, tracker_id=1,
                                           points=[{"x": 5, "y": 5}, {"x": 15, "y": 5}, {"x": 15, "y": 15}],
                                           keypoints=[{"x": 10, "y": 10, "confidence": 0.9}])]})
    b = parse_entry({"predictions": [_pred(30, 10, 10, 10, tracker_id=1,
                                           points=[{"x": 25, "y": 5}, {"x": 35, "y": 5}, {"x": 35, "y": 15}],
                                           keypoints=[{"x": 30, "y": 10, "confidence": 0.5}])]})
    mid = interpolate(a, b, 0.5)
    assert mid.xyxy.tolist() == [[15, 5, 25, 15]]
    assert mid.polygons[0][:, 0].tolist() == [15, 25, 25]
    assert mid.keypoints[0].tolist() == [[20, 10, 0.5]]
    assert interpolate(a, parse_entry({"predictions": []}), 0.5).xyxy.tolist() == a.xyxy.tolist()


def test_timeline_shows_the_last_sample_for_one_interval_only() -> None:
    results = _results([0, 10, 20], 30, [[_pred(50, 50, 10, 10)]] * 3)
    timeline = Timeline(results, ["m"])
    assert [len(timeline.at(i, i / 30)[0]) if timeline.at(i, i / 30) else 0 for i in (0, 5, 20, 29)] == [1, 1, 1, 1]
    assert timeline.at(30, 1.0) == []


def test_start_and_end_render_only_that_range(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=90, size=SIZE, audio=True, gop=30)
    stats = render_video(str(src), _results([0, 30, 60], 30, [[], [], []]), tmp_path / "out.mp4",
                         start=1.0, end=2.0)
    ref = decode_reference(tmp_path / "out.mp4")
    assert stats.frames == 30 and [f.label for f in ref] == list(range(30, 60))
    assert ref[0].time == 0 and probe(str(tmp_path / "out.mp4")).has_audio
    with av.open(str(tmp_path / "out.mp4")) as container:
        audio = container.streams.audio[0]
        assert abs(float(audio.duration * audio.time_base) - 1.0) < 0.1


def test_draws_every_kind_of_prediction_and_counts(checker: Path, tmp_path: Path) -> None:
    keypoints = [{"x": 60 + 3 * k, "y": 60 + 4 * k, "confidence": 0.9, "class": str(k), "class_id": k}
                 for k in range(17)]
    results = _results([0], 30, [[_pred(70, 90, 60, 80, keypoints=keypoints),
                                  _pred(250, 60, 80, 40, "text", text="EXIT 42",
                                        points=[{"x": 210, "y": 40}, {"x": 290, "y": 40}, {"x": 290, "y": 80},
                                                {"x": 210, "y": 80}])]])
    results["gaze"] = [{"time": 0, "predictions": [{"face": {
        "x": 160, "y": 180, "width": 40, "height": 40, "confidence": 0.9, "class": "face", "class_id": 0,
        "landmarks": [{"x": 150 + 4 * i, "y": 175} for i in range(6)]}, "yaw": 0.4, "pitch": 0.1}]}]
    results["cls"] = [{"time": 0, "top": "cat", "confidence": 0.8,
                       "predictions": [{"class": "cat", "class_id": 0, "confidence": 0.8}]}]
    results["clip"] = [{"time": 0, "embeddings": [[0.1, 0.2]]}]
    assert drawable_keys(results) == ["m", "gaze", "cls"]
    render_video(str(checker), results, tmp_path / "out.mp4", blur=["face"])
    frame = _frames(tmp_path / "out.mp4")[3]
    sat = _colour(frame) > 25
    assert sat[44:76, 214:286].mean() > 0.9  # the OCR quadrilateral, filled with a translucent colour
    assert sat[70:120, 70:100].mean() > 0.05  # the skeleton's limbs
    assert (frame[2:30, 2:70] > 200).all(axis=-1).mean() > 0.05  # the classifier's caption: white on a dark block


def test_tracks_lines_and_zones_from_real_tracking_and_counting(checker: Path, tmp_path: Path) -> None:
    from vidinfer.core.tracking import AnalysisOptions, analyse

    # one box moving down across a horizontal line, sampled every 5 frames (6 per second)
    offsets = list(range(0, 30, 5))
    results = _results(offsets, 30, [[_pred(100, 40 + 30 * k, 40, 40, conf=0.95)] for k in range(len(offsets))])
    options = AnalysisOptions.parse("bytetrack", lines=[[[0, 100], [320, 100]]],
                                    zones=[[[180, 130], [300, 130], [300, 230], [180, 230]]])
    analyse(results, options, infer_fps=6)
    assert {p["tracker_id"] for e in results["m"] for p in e["predictions"]} == {1}
    lines, zones = overlays(results, ["m"])
    assert lines.kind == "line" and lines.value(0.0) == (0, 0) and lines.value(1.0) == (0, 1)
    assert zones.kind == "zone" and zones.value(1.0) == (0, 0)
    render_video(str(checker), results, tmp_path / "out.mp4")
    frames = _frames(tmp_path / "out.mp4")
    # the line, white across a dark block of the checkerboard, on every frame (before the first crossing too)
    for frame in (frames[0], frames[29]):
        assert (frame[97:104, 250:300] > 200).all(axis=-1).any(axis=0).mean() > 0.95
    # in between samples the tracked box is interpolated: frame 2 is 2/5 of the way from y=40 to y=70
    sat = _colour(frames[2]) > 60
    top = 52 - 20  # centre 40 + 12, minus half the height
    assert sat[top - 3: top + 4, 90:110].any(axis=0).mean() > 0.95


def test_cli_render_with_a_progress_bar(checker: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vidinfer.cli import cli

    path = tmp_path / "r.json"
    path.write_text(json.dumps(_results([0], 30, [[_pred(100, 100, 40, 40)]])))
    out = CliRunner().invoke(cli, ["render", str(checker), str(path), "-o", str(tmp_path / "o.mp4"),
                                   "--blur", "person", "--end", "0.5"])
    assert out.exit_code == 0, out.output
    assert "15 frames" in out.output and probe(str(tmp_path / "o.mp4")).frame_count == 15
    bad = CliRunner().invoke(cli, ["render", str(checker), str(path), "-m", "nope"])
    assert bad.exit_code != 0 and "no model 'nope'" in str(bad.exception)


# -- the API ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    with Server(tmp_path_factory.mktemp("render-data"), workers=1) as srv:
        yield srv


def test_api_renders_a_finished_job_in_a_worker(server: Server, tmp_path: Path) -> None:
    from vidinfer.demo import build_demo_video

    clip = build_demo_video(tmp_path / "clip.mp4")
    key, other = server.key("acme"), server.key("other")
    job_id = server.submit(key, server.upload(key, clip), infer_fps=2).json()["job_id"]
    params = {"api_key": key, "job_id": job_id}
    assert server.wait(key, job_id)["status"] == 0

    # another workspace's job is not found, nor is a render never asked for
    assert httpx.post(f"{server.url}/videoinfer/render", params={**params, "api_key": other}).status_code == 404
    assert httpx.get(f"{server.url}/videoinfer/render", params=params).status_code == 404
    bad = httpx.post(f"{server.url}/videoinfer/render", params=params, json={"start": 3, "end": 1})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_range"
    past = httpx.post(f"{server.url}/videoinfer/render", params=params, json={"start": 100})  # an 8 s video
    assert past.status_code == 400 and past.json()["error"]["code"] == "invalid_range", past.text
    assert "past the end of the video" in past.json()["error"]["message"]

    r = httpx.post(f"{server.url}/videoinfer/render", params=params, json={"blur": ["person"], "end": 4})
    assert r.status_code == 200 and r.json()["status"] == 1, r.text
    done = server.wait_render(key, job_id)
    assert done["status"] == 0 and done["progress"] == 1.0, done
    assert httpx.get(f"{server.url}/videoinfer/render", params={**params, "api_key": other}).status_code == 404

    video = httpx.get(done["rendered_signed_url"], timeout=60)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "rendered.mp4").write_bytes(video.content)
    info, source = probe(str(tmp_path / "rendered.mp4")), probe(str(clip))
    assert (info.codec, info.fps, info.frame_count, info.width) == ("h264", source.fps, 120, source.width)


# -- which video, which range, which audio ------------------------------------------------------
def _described(video: Path, results: dict[str, Any]) -> dict[str, Any]:
    """``results`` as ``vidinfer infer`` writes them for ``video``: with its ``video`` key."""
    from vidinfer.wire import video_json

    return {**results, "video": video_json(probe(str(video)))}


def test_results_of_another_video_are_refused_unless_forced(tmp_path: Path) -> None:
    big = make_video(tmp_path / "big.mp4", frames=24, size=(768, 576))
    small = make_video(tmp_path / "small.mp4", frames=20, size=(640, 480))
    results = _described(big, _results([0, 6, 12, 18], 30, [[_pred(100, 100, 40, 40)]] * 4))
    with pytest.raises(InvalidInput) as refused:
        render_video(str(small), results, tmp_path / "out.mp4")
    message = refused.value.message
    assert refused.value.code == "video_mismatch" and "--force" in message
    assert "768x576, 24 frames, 0.800 s" in message and "640x480, 20 frames, 0.667 s" in message
    assert not (tmp_path / "out.mp4").exists()
    forced = render_video(str(small), results, tmp_path / "out.mp4", force=True)
    assert forced.frames == 20 and "another video" in forced.warnings[0]
    # its own video passes without a word; a file written before the key existed is drawn, with a warning
    assert render_video(str(big), results, tmp_path / "own.mp4").warnings == []
    old = render_video(str(small), {k: v for k, v in results.items() if k != "video"}, tmp_path / "old.mp4")
    assert old.frames == 20 and "not checked" in old.warnings[0]


def test_cli_refuses_another_video_in_one_line_and_force_draws_it(tmp_path: Path) -> None:
    from test_cli import run_cli

    big = make_video(tmp_path / "big.mp4", frames=12, size=(768, 576))
    small = make_video(tmp_path / "small.mp4", frames=10, size=(640, 480))
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_described(big, _results([0, 6], 30, [[_pred(100, 100, 40, 40)]] * 2))))
    proc = run_cli("render", str(small), str(path), "-o", str(tmp_path / "o.mp4"), "-q", data_dir=tmp_path / "d")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: the results were made from another video") and "--force" in proc.stderr
    proc = run_cli("render", str(small), str(path), "-o", str(tmp_path / "o.mp4"), "-q", "--force",
                   data_dir=tmp_path / "d")
    assert proc.returncode == 0 and "warning: the results were made from another video" in proc.stderr
    assert probe(str(tmp_path / "o.mp4")).frame_count == 10


def test_default_range_is_the_one_the_results_cover(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=120, size=SIZE, audio=True)  # 4 s
    first_second = _results([0, 6, 12, 18, 24], 30, [[_pred(100, 100, 40, 40)]] * 5)
    stats = render_video(str(src), first_second, tmp_path / "a.mp4")
    assert stats.frames == 30 and [f.label for f in decode_reference(tmp_path / "a.mp4")] == list(range(30))
    with av.open(str(tmp_path / "a.mp4")) as container:
        audio = container.streams.audio[0]
        assert abs(float(audio.duration * audio.time_base) - 1.0) < 0.1
    # a range in the middle (infer --start 2 --end 3), and what is asked for wins over the default
    middle = _described(src, _results([60, 66, 72, 78, 84], 30, [[]] * 5))  # with its video key: the same
    assert [f.label for f in decode_reference(render_video(str(src), middle, tmp_path / "b.mp4").output)] == \
        list(range(60, 90))
    assert render_video(str(src), first_second, tmp_path / "c.mp4", end=3.0).frames == 90
    assert render_video(str(src), first_second, tmp_path / "d.mp4", start=2.0).frames == 60
    assert render_video(str(src), middle, tmp_path / "e.mp4", end=1.0).frames == 30


@pytest.mark.parametrize(("codec", "name"), [("mp3", "mp3"), ("aac", "aac")])
def test_mp3_and_aac_audio_are_copied_not_reencoded(codec: str, name: str, tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mkv", frames=30, size=SIZE, audio=codec)
    with av.open(str(src)) as container:
        source = container.streams.audio[0]
        packets = [bytes(p) for p in container.demux(source) if p.size][:5]
    stats = render_video(str(src), _results([0], 30, [[]]), tmp_path / "out.mp4")
    assert stats.audio == "copy"
    with av.open(str(tmp_path / "out.mp4")) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.codec.canonical_name == name
        # copied: the very packets of the source
        assert [bytes(p) for p in container.demux(audio) if p.size][:5] == packets

"""Real-world container and codec quirks (``tests/quirks.py``) come out right.

One table, one row per quirk; every row is checked the same ways:

| check | what must hold |
|---|---|
| probe | the facts ``vidinfer probe`` reports (displayed size, rotation, frames, fps, SAR) |
| samples | ``frame_offset`` / ``time_offset`` at the row's ``infer_fps``; the label each sample spells, as shown |
| chunks | samples decoded in two chunks (the second one seeking) are the single pass's, pixel for pixel |
| results | the COCO detector's results: the same samples, ``image`` = the displayed size, ``partial`` as the row says |
| ffmpeg (rotated rows) | every frame equals ``ffmpeg -i``'s autorotated decode, pixel for pixel |

Plus, for rotation: a sideways-stored astronaut is found by COCO only when the display
matrix is applied; ``vidinfer render`` writes the displayed orientation with no matrix of
its own; ``vidinfer probe`` prints the rotation.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from quirks import QUIRKS, Quirk, ffmpeg
from skimage.data import astronaut
from videos import frame_label

from vidinfer.cli import cli
from vidinfer.core.chunks import merge_results
from vidinfer.core.orientation import UPRIGHT, Orientation, from_matrix
from vidinfer.core.pipeline import decode_batches, expected_samples
from vidinfer.core.video import iter_frames, probe
from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.registry import LoadOptions, ModelRegistry
from vidinfer.render import render_video

ROTATED = [q for q in QUIRKS if q.rotated]


@pytest.fixture(scope="session")
def quirk_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Quirk], Path]:
    """The quirk's file, made on first use and kept for the session (read-only)."""
    folder = tmp_path_factory.mktemp("quirks")
    made: dict[str, Path] = {}

    def get(quirk: Quirk) -> Path:
        if quirk.name not in made:
            sub = folder / quirk.name
            sub.mkdir()
            made[quirk.name] = quirk.make(sub)
        return made[quirk.name]

    return get


@pytest.fixture(scope="module")
def coco() -> list:
    return resolve_runs(ModelRegistry(None, LoadOptions(threads=1)), [ModelRequest("coco", "coco", {})])


def _samples(path: Path, infer_fps: Fraction, k_range: tuple[int, int | None] = (0, None),
             ) -> tuple[list[int], list[float], list[np.ndarray]]:
    """(frame_offset, time_offset, displayed pictures) of the samples, as the pipeline decodes them."""
    info = probe(str(path))
    size = (info.width, info.height)
    indices, times, images = [], [], []
    for batch in decode_batches(info, [size], infer_fps, k_range=k_range, decode_threads=1):
        indices += batch.indices
        times += [round(float(t), 4) for t in batch.times]
        images += batch.images[size]
    return indices, times, images


@pytest.mark.parametrize("quirk", QUIRKS, ids=[q.name for q in QUIRKS])
def test_probe(quirk: Quirk, quirk_file: Callable[[Quirk], Path]) -> None:
    facts = probe(str(quirk_file(quirk))).as_dict()
    assert {key: facts.get(key) for key in quirk.probe} == quirk.probe


@pytest.mark.parametrize("quirk", QUIRKS, ids=[q.name for q in QUIRKS])
def test_samples_show_what_a_player_shows(quirk: Quirk, quirk_file: Callable[[Quirk], Path]) -> None:
    indices, times, images = _samples(quirk_file(quirk), quirk.infer_fps)
    assert (tuple(indices), tuple(times)) == (quirk.frame_offset, quirk.time_offset)
    assert all(image.shape == (quirk.image[1], quirk.image[0], 3) for image in images)
    if quirk.labels is not None:
        assert tuple(frame_label(image) for image in images) == quirk.labels


@pytest.mark.parametrize("quirk", QUIRKS, ids=[q.name for q in QUIRKS])
def test_chunks_agree_with_one_pass(quirk: Quirk, quirk_file: Callable[[Quirk], Path]) -> None:
    path = quirk_file(quirk)
    whole = _samples(path, quirk.infer_fps)
    split = len(whole[0]) // 2 + 1  # past the first keyframe interval where there is one: a seek
    first, second = _samples(path, quirk.infer_fps, (0, split)), _samples(path, quirk.infer_fps, (split, None))
    assert first[0] + second[0] == whole[0] and first[1] + second[1] == whole[1]
    for a, b in zip(first[2] + second[2], whole[2], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("quirk", QUIRKS, ids=[q.name for q in QUIRKS])
def test_results(quirk: Quirk, quirk_file: Callable[[Quirk], Path], coco: list) -> None:
    out = run_inference(str(quirk_file(quirk)), coco, quirk.infer_fps, decode_threads=1)
    results = out.results_json
    assert tuple(results["frame_offset"]) == quirk.frame_offset
    assert tuple(results["time_offset"]) == quirk.time_offset
    assert len(results["coco"]) == len(quirk.frame_offset) == expected_samples(out.info, quirk.infer_fps)
    assert {tuple(e["image"].values()) for e in results["coco"]} == {quirk.image}
    assert out.result.partial == quirk.partial, out.result.warnings


def test_rotated_chunks_merge_into_the_single_pass(quirk_file: Callable[[Quirk], Path], coco: list) -> None:
    """What the distributed mode does: chunks run apart (each probing the file), results merged."""
    path = str(quirk_file(next(q for q in QUIRKS if q.name == "rotation_-90_mirrored")))
    whole = run_inference(path, coco, Fraction(2), decode_threads=1).results_json
    parts = [run_inference(path, coco, Fraction(2), decode_threads=1, k_range=k).results_json
             for k in ((0, 1), (1, 3), (3, None))]
    merged = merge_results(parts)
    assert merged["frame_offset"] == whole["frame_offset"] and merged["time_offset"] == whole["time_offset"]
    images = [e["image"] for e in merged["coco"]]
    assert images == [e["image"] for e in whole["coco"]] == [{"width": 48, "height": 64}] * 4


def _ffmpeg_frames(path: Path, size: tuple[int, int], folder: Path) -> np.ndarray:
    """Every frame as the ``ffmpeg`` command line decodes it (autorotate on, its default), RGB."""
    raw = folder / "frames.rgb"
    ffmpeg("-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", raw)
    return np.frombuffer(raw.read_bytes(), np.uint8).reshape(-1, size[1], size[0], 3)


@pytest.mark.parametrize("quirk", ROTATED, ids=[q.name for q in ROTATED])
def test_rotation_matches_ffmpeg(quirk: Quirk, quirk_file: Callable[[Quirk], Path], tmp_path: Path) -> None:
    path = quirk_file(quirk)
    info = probe(str(path))
    ours = np.stack([decoded.to_rgb() for decoded in iter_frames(info)])
    theirs = _ffmpeg_frames(path, quirk.image, tmp_path)
    assert ours.shape == theirs.shape == (info.frame_count, quirk.image[1], quirk.image[0], 3)
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    # downscaled on the way to a model (the YUV fast path), the turn is the same
    small = np.stack([decoded.to_rgb((quirk.image[0] // 2, quirk.image[1] // 2)) for decoded in iter_frames(info)])
    assert [frame_label(f) for f in small] == [frame_label(f) for f in theirs] == list(range(info.frame_count))


def _rotation_matrix(degrees: float) -> list[int]:
    """A counterclockwise turn as PyAV's ``set_display_rotation`` writes it (16.16 fixed point, 2.30 for w):
    ``rotated(90)`` holds ``[0, -65536, 0, 65536, 0, ...]``, and ``ffmpeg`` turns it counterclockwise."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return [round(c * 65536), round(-s * 65536), 0, round(s * 65536), round(c * 65536), 0, 0, 0, 1 << 30]


@pytest.mark.parametrize(("degrees", "expected"), [(0, UPRIGHT), (90, Orientation(90)), (-90, Orientation(-90)),
                                                   (180, Orientation(180)), (-180, Orientation(180)),
                                                   (270, Orientation(-90)), (88.5, Orientation(90)),
                                                   (-93, Orientation(-90)), (179, Orientation(180))])
def test_matrix_angles(degrees: float, expected: Orientation) -> None:
    assert from_matrix(_rotation_matrix(degrees)) == expected


def test_matrix_helper_is_what_pyav_writes(quirk_file: Callable[[Quirk], Path]) -> None:
    quirk = next(q for q in QUIRKS if q.name == "rotation_90")
    with av.open(str(quirk_file(quirk))) as container:
        frame = next(container.decode(video=0))
        written = np.frombuffer(bytes(frame.side_data.get("DISPLAYMATRIX")), "<i4").tolist()
    assert written == _rotation_matrix(90) and frame.rotation == 90


def test_odd_matrices_are_upright_or_mirrors() -> None:
    assert from_matrix([0] * 9) == UPRIGHT  # degenerate: ffmpeg applies nothing either
    assert from_matrix(None) == from_matrix([1, 2, 3]) == UPRIGHT
    assert from_matrix([-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]) == Orientation(0, mirrored=True)
    assert from_matrix([65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30]) == Orientation(180, mirrored=True)  # vflip


# -- rotation, end to end -----------------------------------------------------------------------

def _astronaut_video(path: Path, picture: np.ndarray, rotation: int | None) -> Path:
    """Two frames of ``picture`` as displayed; stored turned back, with a display matrix (or, for
    ``rotation=None``, the turned picture stored as it is: what vidinfer saw before it read matrices)."""
    turn = rotation if rotation is not None else 0
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=2)
        stored = np.ascontiguousarray(np.rot90(picture, -turn // 90))
        stream.height, stream.width = stored.shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for _ in range(2):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _people(path: Path, runs: list) -> list[dict]:
    results = run_inference(str(path), runs, Fraction(2), decode_threads=1).results_json
    return [p for entry in results["coco"] for p in entry["predictions"] if p["class"] == "person"]


@pytest.mark.parametrize(("rotation", "crop"), [(-90, (slice(None), slice(None))),
                                                (180, (slice(None), slice(64, 448)))], ids=["-90", "180"])
def test_coco_finds_the_person_only_upright(rotation: int, crop: tuple[slice, slice], tmp_path: Path,
                                            coco: list) -> None:
    picture = astronaut()[crop]  # 512x512, or 384 wide
    height, width = picture.shape[:2]
    turned = np.rot90(picture, -rotation // 90)
    # the control: the sideways/upside-down picture as it is stored; the detector misses her
    assert _people(_astronaut_video(tmp_path / "stored.mp4", turned, None), coco) == []
    # with the display matrix vidinfer turns it upright: found, her box in displayed pixels
    video = _astronaut_video(tmp_path / "phone.mp4", picture, rotation)
    assert probe(str(video)).as_dict()["rotation"] == rotation
    people = _people(video, coco)
    assert len(people) == 2 and min(p["confidence"] for p in people) > 0.5
    assert all(p["height"] > 0.6 * height and p["height"] > p["width"] for p in people)
    assert all(0 < p["x"] < width and 0 < p["y"] < height for p in people)


def test_render_writes_the_displayed_orientation(quirk_file: Callable[[Quirk], Path], tmp_path: Path,
                                                 coco: list) -> None:
    quirk = next(q for q in QUIRKS if q.name == "rotation_-90_mirrored")
    path = quirk_file(quirk)
    results = run_inference(str(path), coco, Fraction(2), decode_threads=1).results_json
    assert not any(entry["predictions"] for entry in results["coco"])
    plain = render_video(str(path), results, tmp_path / "plain.mp4")
    info = probe(str(plain.output))
    assert plain.frames == 20
    assert (info.width, info.height, info.orientation.rotation, info.orientation.mirrored) == (48, 64, 0, False)
    shown = [decoded.to_rgb() for decoded in iter_frames(info)]
    assert [frame_label(f) for f in shown] == list(range(20))
    # a player (ffmpeg, autorotating) shows the same: no matrix left on the output to turn it twice
    assert [frame_label(f) for f in _ffmpeg_frames(plain.output, (48, 64), tmp_path)] == list(range(20))
    # a box drawn in displayed pixels lands there: (20, 28)-(28, 36) on a 48x64 picture
    for entry in results["coco"]:
        entry["predictions"] = [{"x": 24, "y": 32, "width": 8, "height": 8, "confidence": 0.9, "class": "person",
                                 "class_id": 0, "detection_id": "a"}]
    boxed = render_video(str(path), results, tmp_path / "boxed.mp4")
    drawn = next(iter_frames(probe(str(boxed.output)))).to_rgb()
    changed = np.abs(drawn.astype(int) - shown[0]).sum(axis=2) > 60
    assert drawn.shape == (64, 48, 3) and changed[28:37, 19:30].any() and not changed[48:, :].any()


def test_cli_probe_prints_the_rotation(quirk_file: Callable[[Quirk], Path]) -> None:
    quirk = next(q for q in QUIRKS if q.name == "rotation_-90")
    done = CliRunner().invoke(cli, ["probe", "--json", str(quirk_file(quirk))])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert (data["width"], data["height"], data["rotation"], data["mirrored"]) == (48, 64, -90, False)


def test_ffmpeg_binary_is_there() -> None:
    """The quirks need the ``ffmpeg`` of ``imageio-ffmpeg`` (a test dependency), never a system one."""
    import imageio_ffmpeg

    version = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-version"], capture_output=True, text=True,
                             check=False)
    assert version.returncode == 0 and version.stdout.startswith("ffmpeg")

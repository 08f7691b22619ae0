"""A corpus of real-world container and codec quirks, made on the spot, tiny and deterministic.

``tests/corpus.py`` tables hostile input that must fail cleanly or come out partial;
this one tables files every phone, camera and editor writes, which must come out
*right*. Each ``Quirk`` writes one small video (a second or two at 64x48) and says what
vidinfer must make of it: the probe's facts, the samples (``frame_offset``,
``time_offset``), the image size in the results, whether they are partial, and, where
the pixels tell, the label (``tests/videos.py``'s ``draw_label``) every sample's picture
must show the way a player shows it. ``tests/test_quirks.py`` runs the table.

    python tests/quirks.py OUT_DIR      # write every quirk, print what was made

To add a quirk: write a maker ``(folder) -> path`` (PyAV, the ``ffmpeg`` binary of the
``imageio-ffmpeg`` package via ``ffmpeg()``, or packet rewriting) in any test module,
and append a ``Quirk`` to ``QUIRKS`` (or pass your own list to ``build``).

What vidinfer does with each, and why:

- rotation: the display matrix is applied at decode, as ``ffmpeg`` applies it (the frames
  match ``ffmpeg -i``'s, pixel for pixel); sizes and boxes are the displayed ones.
- edit lists: the presentation timeline, as players show it: frames an edit cuts are not
  frames, and time 0 is the first frame shown.
- variable frame rate: each frame's own timestamp; samples take the nearest frame.
- open GOP: leading pictures of a later GOP are decoded with their references when the
  video is decoded from the start, and never shown from a seek (chunks agree).
- interlaced: frames as stored (both fields woven), no deinterlacing, as ``ffmpeg`` without
  a filter gives them.
- 10-bit: converted to 8-bit RGB for the models.
- non-square pixels: results are in *stored* pixels (what ``ffmpeg``/OpenCV decode to); the
  probe reports ``sample_aspect_ratio`` (display x = stored x times it).
- several video streams: the first stream marked default, else the first (as players).
- cover art: an attached picture is never the video.
- packed B-frames (DivX/Xvid AVI): pictures are counted, not packets; whole, not partial.
- sparse pictures (fewer than the declared rate): infer_fps is judged against the declared
  rate; each sample takes the nearest picture, so samples may repeat a ``frame_offset``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from quirks_avi import make_packed_avi, make_sparse_avi
from videos import draw_label, make_video

__all__ = ["QUIRKS", "Quirk", "build", "ffmpeg", "label_stream", "labelled"]

SIZE = (64, 48)


@dataclass(frozen=True)
class Quirk:
    """One quirk: ``make(folder)`` writes it and returns its path; the rest is what must come of it.

    ``probe``: keys of ``VideoInfo.as_dict()`` and their values. ``frame_offset`` /
    ``time_offset``: the samples at ``infer_fps``. ``image``: (width, height) in the
    results. ``labels``: what each sample's displayed picture spells (None: the pixels
    are not checked). ``rotated``: vidinfer's frames must equal ``ffmpeg``'s autorotated decode.
    """

    name: str
    what: str
    make: Callable[[Path], Path]
    probe: dict[str, Any]
    frame_offset: tuple[int, ...]
    time_offset: tuple[float, ...]
    image: tuple[int, int] = SIZE
    infer_fps: Fraction = Fraction(2)
    partial: bool = False
    labels: tuple[int, ...] | None = None
    rotated: bool = False


def ffmpeg(*args: str | os.PathLike[str]) -> None:
    """Run the ``ffmpeg`` binary that the ``imageio-ffmpeg`` package ships (none is installed system-wide)."""
    import imageio_ffmpeg

    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *map(str, args)],
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode:
        raise RuntimeError(f"ffmpeg {' '.join(map(str, args))}: {done.stderr.strip()}")


def _stored_luma(label: int, size: tuple[int, int], rotation: int, hflip: bool) -> np.ndarray:
    """The stored luma whose display (turned ``rotation`` degrees counterclockwise, then mirrored if
    ``hflip``: PyAV's ``set_display_rotation``) spells ``label`` upright at ``size``."""
    shown = draw_label(label, size)[: size[1]]
    if hflip:
        shown = shown[:, ::-1]
    return np.ascontiguousarray(np.rot90(shown, -rotation // 90))


def labelled(path: Path, **kwargs: Any) -> Path:
    """Encode one video stream of ``label_stream(**kwargs)`` into ``path``."""
    with av.open(str(path), "w") as out:
        _mux(out, [label_stream(out, **kwargs)])
    return path


def label_stream(out: av.container.OutputContainer, *, frames: int = 20, fps: int = 10,
                 size: tuple[int, int] = SIZE, codec: str = "libx264", pix_fmt: str = "yuv420p",
                 options: dict[str, str] | None = None, rotation: int | None = None, hflip: bool = False,
                 sar: Fraction | None = None, first_label: int = 0, pts_ms: Sequence[int] | None = None,
                 default: bool | None = None) -> tuple[av.video.stream.VideoStream, list[av.VideoFrame]]:
    """A new video stream in ``out`` and its ``frames`` frames, whose *displayed* picture (``size``)
    spells ``first_label + i``.

    ``rotation``/``hflip``: a display matrix (the stored picture is turned the other way);
    ``sar``: the sample aspect ratio written to the stream; ``pts_ms``: each frame's time in
    ms (variable frame rate); ``default``: the stream's default disposition.
    """
    turn = rotation or 0
    stored = (size[1], size[0]) if turn in (90, -90) else size
    stream = out.add_stream(codec, rate=fps, options=dict(options or {}))
    stream.width, stream.height = stored
    stream.pix_fmt = pix_fmt
    time_base = Fraction(1, 1000) if pts_ms is not None else Fraction(1, fps)
    stream.time_base = stream.codec_context.time_base = time_base
    if sar is not None:
        stream.codec_context.sample_aspect_ratio = sar
    if rotation is not None or hflip:
        stream.set_display_rotation(turn, hflip=hflip)
    if default is not None:
        stream.disposition = av.stream.Disposition.default if default else av.stream.Disposition(0)
    chroma = np.full((stored[1] // 2, stored[0]), 128, np.uint8)
    pictures = []
    for i in range(frames):
        yuv = np.concatenate([_stored_luma(first_label + i, size, turn, hflip), chroma])
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        if pix_fmt != "yuv420p":
            frame = frame.reformat(format=pix_fmt)
        frame.pts = pts_ms[i] if pts_ms is not None else i
        frame.time_base = time_base
        pictures.append(frame)
    return stream, pictures


def _mux(out: av.container.OutputContainer,
         streams: Sequence[tuple[av.video.stream.VideoStream, list[av.VideoFrame]]]) -> None:
    """Encode and mux every stream's frames (streams are all added before the first packet)."""
    for stream, pictures in streams:
        for frame in pictures:
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


# -- the makers ---------------------------------------------------------------------------------

def rotated(degrees: int, hflip: bool = False, suffix: str = ".mp4", **kwargs: Any) -> Callable[[Path], Path]:
    """A phone-style video: stored sideways with a display matrix, displayed 48x64 (or 64x48 for 180)."""
    size = (48, 64) if degrees in (90, -90) else SIZE
    name = f"rotated_{degrees}{'_mirrored' * hflip}{suffix}"
    return lambda folder: labelled(folder / name, size=size, rotation=degrees, hflip=hflip, **kwargs)


def edit_list(folder: Path) -> Path:
    """An MP4 cut at 1.5 s without re-encoding (``ffmpeg -ss 1.5 -c copy``): the GOP before the cut
    point is kept for reference and an edit list hides its first five frames."""
    source = make_video(folder / "source.mp4", frames=30, fps=10, gop=10)
    ffmpeg("-ss", "1.5", "-i", source, "-c", "copy", folder / "cut.mp4")
    return folder / "cut.mp4"


#: frame times (ms) of the variable-rate quirk: a phone slowing down in the dark, then catching up
VFR_MS = (0, 100, 200, 500, 600, 1200, 1300, 1400, 2000)


def variable_rate(folder: Path) -> Path:
    return labelled(folder / "vfr.mp4", frames=len(VFR_MS), pts_ms=VFR_MS)


def open_gop(folder: Path) -> Path:
    """H.264 with open GOPs (non-IDR keyframes whose leading B-frames refer back across them), 4 s."""
    return labelled(folder / "open_gop.mkv", frames=40,
                    options={"x264-params": "open-gop=1:keyint=10:min-keyint=10:scenecut=0:bframes=3"})


def interlaced(folder: Path) -> Path:
    """H.264 coded interlaced (MBAFF, top field first), as broadcast and some camcorders write it."""
    return labelled(folder / "interlaced.mp4", options={"x264-params": "interlaced=1:tff=1"})


def ten_bit(folder: Path) -> Path:
    return labelled(folder / "10bit.mp4", pix_fmt="yuv420p10le")


def anamorphic(folder: Path) -> Path:
    """64x48 stored pixels 4:3 wide each: shown 85x48 (16:9), as DV and some broadcast files are."""
    return labelled(folder / "anamorphic.mp4", sar=Fraction(4, 3))


def two_videos(folder: Path) -> Path:
    """Two video tracks, both default: the first is the video; the second (96x64, labels from 100)
    is a second angle."""
    path = folder / "two_videos.mkv"
    with av.open(str(path), "w") as out:
        _mux(out, [label_stream(out, default=True), label_stream(out, size=(96, 64), first_label=100, default=True)])
    return path


def second_default(folder: Path) -> Path:
    """Two video tracks, only the second marked default: players show the second (labels from 100)."""
    path = folder / "second_default.mkv"
    with av.open(str(path), "w") as out:
        _mux(out, [label_stream(out, size=(96, 64), first_label=200, default=False),
                   label_stream(out, first_label=100, default=True)])
    return path


def cover_art(folder: Path) -> Path:
    """An MP4 with a cover picture (``covr``, read back as an attached-picture video stream)."""
    video = labelled(folder / "plain.mp4")
    cover = folder / "cover.png"
    av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24").save(str(cover))
    path = folder / "cover_art.mp4"
    ffmpeg("-i", video, "-i", cover, "-map", "0", "-map", "1", "-c", "copy", "-disposition:v:1", "attached_pic",
           path)
    return path


def cover_art_mkv(folder: Path) -> Path:
    """A Matroska file with a cover picture attached (read back as an attached-picture stream)."""
    video = labelled(folder / "plain.mkv")
    cover = folder / "cover.png"
    av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24").save(str(cover))
    path = folder / "cover_art.mkv"
    ffmpeg("-i", video, "-attach", cover, "-metadata:s:t", "mimetype=image/png", "-c", "copy", path)
    return path


# -- the table ----------------------------------------------------------------------------------

#: 20 frames at 10 fps, sampled at 2 fps: frames 0, 5, 10, 15
_EVERY_5 = (0, 5, 10, 15)
_EVERY_5_T = (0.0, 0.5, 1.0, 1.5)
_SPARSE = (0, 2, 3, 4, 5, 6, 7, 7, 8, 9, 10, 10, 11, 11, 12, 13, 16, 18, 18, 19)
_SPARSE_T = (0.0, 0.5333, 1.1333, 1.6667, 2.0667, 2.3333, 3.6, 3.6, 3.9333, 4.4, 4.6, 4.6, 6.5333, 6.5333, 6.6667,
             7.4, 8.0667, 8.4667, 8.4667, 9.7333)
_PLAIN = {"frame_count": 20, "fps": "10/1", "width": 64, "height": 48, "rotation": 0, "mirrored": False}


def _turned(rotation: int, mirrored: bool) -> dict[str, Any]:
    size = (48, 64) if rotation in (90, -90) else SIZE
    return {**_PLAIN, "width": size[0], "height": size[1], "rotation": rotation, "mirrored": mirrored}


QUIRKS: list[Quirk] = [
    Quirk("rotation_90", "display matrix: turn 90 degrees counterclockwise", rotated(90), _turned(90, False),
          _EVERY_5, _EVERY_5_T, image=(48, 64), labels=_EVERY_5, rotated=True),
    Quirk("rotation_-90", "display matrix: turn 90 degrees clockwise (an upright phone)", rotated(-90),
          _turned(-90, False), _EVERY_5, _EVERY_5_T, image=(48, 64), labels=_EVERY_5, rotated=True),
    Quirk("rotation_-90_mov", "an iPhone-style MOV, turned clockwise", rotated(-90, suffix=".mov"),
          _turned(-90, False), _EVERY_5, _EVERY_5_T, image=(48, 64), labels=_EVERY_5, rotated=True),
    Quirk("rotation_-90_webm", "VP9 WebM (a browser's recording), turned clockwise",
          rotated(-90, suffix=".webm", codec="libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8"}),
          _turned(-90, False), _EVERY_5, _EVERY_5_T, image=(48, 64), labels=_EVERY_5, rotated=True),
    Quirk("rotation_180", "display matrix: upside down", rotated(180), _turned(180, False),
          _EVERY_5, _EVERY_5_T, labels=_EVERY_5, rotated=True),
    Quirk("rotation_-90_mirrored", "display matrix: turn clockwise, then mirror (a front camera)",
          rotated(-90, hflip=True), _turned(-90, True), _EVERY_5, _EVERY_5_T, image=(48, 64), labels=_EVERY_5,
          rotated=True),
    Quirk("mirrored", "display matrix: mirror left to right only", rotated(0, hflip=True), _turned(0, True),
          _EVERY_5, _EVERY_5_T, labels=_EVERY_5, rotated=True),
    # the cut keeps frames 10-29 (from the keyframe at 1 s); the edit list shows 15-29 from t=0
    Quirk("edit_list", "MP4 cut at 1.5 s without re-encoding (an edit list hides 5 frames)", edit_list,
          {"frame_count": 15, "fps": "10/1", "duration": 1.5}, (0, 5, 10), (0.0, 0.5, 1.0), labels=(15, 20, 25)),
    Quirk("variable_rate", "variable frame rate: frames 0.1 to 0.6 s apart", variable_rate,
          {"frame_count": 9, "fps": "4/1", "duration": 2.25}, (0, 3, 5, 7, 8),
          (0.0, 0.5, 1.2, 1.4, 2.0), labels=(0, 3, 5, 7, 8)),
    Quirk("open_gop", "H.264 open GOPs (keyframe every 10 frames, 3 B-frames)", open_gop,
          {"frame_count": 40, "fps": "10/1", "duration": 4.0}, (0, 5, 10, 15, 20, 25, 30, 35),
          tuple(k / 2 for k in range(8)), labels=(0, 5, 10, 15, 20, 25, 30, 35)),
    Quirk("interlaced", "H.264 interlaced (MBAFF, top field first)", interlaced, _PLAIN, _EVERY_5, _EVERY_5_T,
          labels=_EVERY_5),
    Quirk("10bit", "H.264 10-bit 4:2:0", ten_bit, _PLAIN, _EVERY_5, _EVERY_5_T, labels=_EVERY_5),
    Quirk("anamorphic", "non-square pixels (SAR 4:3): results in stored pixels", anamorphic,
          {**_PLAIN, "sample_aspect_ratio": "4/3"}, _EVERY_5, _EVERY_5_T, labels=_EVERY_5),
    Quirk("two_videos", "two video streams, both default: the first is used", two_videos, _PLAIN,
          _EVERY_5, _EVERY_5_T, labels=_EVERY_5),
    Quirk("second_default", "two video streams, the second marked default: it is used", second_default,
          _PLAIN, _EVERY_5, _EVERY_5_T, labels=(100, 105, 110, 115)),
    Quirk("cover_art", "MP4 with cover art (an attached picture)", cover_art, _PLAIN, _EVERY_5, _EVERY_5_T,
          labels=_EVERY_5),
    Quirk("cover_art_mkv", "Matroska with a cover picture attached", cover_art_mkv, _PLAIN, _EVERY_5,
          _EVERY_5_T, labels=_EVERY_5),
    # tests/quirks_avi.py: 48 pictures in 49 packets (P+B packed, then an N-VOP placeholder): whole, not partial
    Quirk("packed_b_frames", "DivX/Xvid AVI with packed B-frames (12 fps)", lambda folder: make_packed_avi(
          folder / "packed.avi"), {"frame_count": 48, "fps": "12/1", "declared_fps": "12/1", "duration": 4.0},
          tuple(range(0, 48, 6)), tuple(k / 2 for k in range(8)), labels=tuple(range(0, 48, 6))),
    # 20 pictures at random slots of a declared 15 fps over 10 s: each sample takes the nearest picture,
    # so where they are far apart two samples share one (frame_offset 7, 10, 11, 18 repeat)
    Quirk("sparse", "AVI declaring 15 fps with 20 pictures over 10 s (dropped or held frames)",
          lambda folder: make_sparse_avi(folder / "sparse.avi"),
          {"frame_count": 20, "declared_fps": "15/1", "width": 64, "height": 48}, _SPARSE, _SPARSE_T,
          labels=_SPARSE),
]


def build(folder: Path, quirks: list[Quirk] | None = None) -> dict[str, Path]:
    """Write every quirk (or ``quirks``) into ``folder``, each in its own subfolder: name -> path."""
    made = {}
    for quirk in quirks or QUIRKS:
        sub = folder / quirk.name
        sub.mkdir(parents=True, exist_ok=True)
        made[quirk.name] = quirk.make(sub)
    return made


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "quirks")
    for name, made_path in build(target).items():
        print(f"{name:24} {os.path.getsize(made_path):>9}  {made_path}")

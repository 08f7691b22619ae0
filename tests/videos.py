"""Encode small test videos with PyAV, and decode them independently of vidinfer.

Every frame carries its own number in its pixels (a 4x4 grid of black/white
blocks, 16 bits, sturdy under any lossy codec at any size from 32x32 up), so a
test can check *which* frame it got, not only how many::

    path = make_video(tmp_path / "a.mp4", frames=60, fps=Fraction(30000, 1001))
    ref = decode_reference(path)          # every frame, straight from PyAV
    assert [f.label for f in ref] == list(range(60))
    assert frame_label(some_av_frame) == 17

``make_video`` writes any container FFmpeg can guess from the suffix (``.mp4``,
``.mkv``, ``.avi``, ``.ts``, ``.webm``, ``.mov``, ``.h264`` raw Annex-B, ...),
with a chosen codec, frame rate or explicit per-frame times (variable frame
rate), GOP, B-frames, an audio track, and a hook to doctor packets before they
are muxed (drop or scramble timestamps to imitate badly muxed files).
``make_audio`` writes an audio-only file. ``reference_samples`` applies the
sampling rule by brute force, for comparing with what vidinfer picks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "RefFrame",
    "decode_reference",
    "draw_label",
    "frame_label",
    "make_audio",
    "make_video",
    "reference_samples",
]

#: the label grid: GRID x GRID blocks, one bit each, most significant first
GRID = 4
_DARK, _LIGHT = 16, 235


def draw_label(label: int, size: tuple[int, int]) -> np.ndarray:
    """A ``yuv420p`` frame as PyAV's (H * 3 / 2, W) array whose luma blocks spell ``label``."""
    width, height = size
    if not 0 <= label < 2 ** (GRID * GRID):
        raise ValueError(f"label {label} does not fit in {GRID * GRID} bits")
    bits = [(label >> (GRID * GRID - 1 - i)) & 1 for i in range(GRID * GRID)]
    grid = np.array(bits, dtype=np.uint8).reshape(GRID, GRID) * (_LIGHT - _DARK) + _DARK
    rows = np.arange(height) * GRID // height
    cols = np.arange(width) * GRID // width
    luma = grid[rows[:, None], cols[None, :]]
    chroma = np.full((height // 2, width), 128, dtype=np.uint8)
    return np.concatenate([luma, chroma])


def frame_label(frame: av.VideoFrame | np.ndarray) -> int:
    """Read back the number ``draw_label`` wrote, from a decoded frame or an RGB/grey array."""
    if isinstance(frame, av.VideoFrame):
        luma = frame.to_ndarray(format="gray").astype(np.float32)
    else:
        luma = np.asarray(frame, dtype=np.float32)
        if luma.ndim == 3:
            luma = luma.mean(axis=2)
    height, width = luma.shape
    label = 0
    for i in range(GRID * GRID):
        r, c = divmod(i, GRID)
        y0, y1 = r * height // GRID, (r + 1) * height // GRID
        x0, x1 = c * width // GRID, (c + 1) * width // GRID
        # the middle half of the block: clear of ringing at the block edges
        dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
        centre = luma[y0 + dy : y1 - dy, x0 + dx : x1 - dx]
        label = (label << 1) | int(centre.mean() > (_DARK + _LIGHT) / 2)
    return label


def make_video(
    path: str | Path,
    *,
    frames: int = 30,
    fps: Fraction | int = Fraction(30),
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    pts: Sequence[Fraction | float] | None = None,
    time_base: Fraction | None = None,
    gop: int | None = None,
    bframes: int | None = None,
    audio: bool | str = False,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    labels: Sequence[int] | None = None,
    on_packet: Callable[[av.Packet, int], av.Packet | None] | None = None,
) -> Path:
    """Encode a small video whose frame ``i`` shows the label ``labels[i]`` (default ``i``).

    - ``fps``: the nominal rate; frame ``i`` is at ``i / fps`` seconds unless ``pts``
      gives every frame's presentation time in seconds (variable frame rate; then
      ``time_base`` defaults to 1/1000 s and each time must be a multiple of it).
    - ``gop``: keyframe interval in frames (libx264's scene-cut keyframes are off
      whenever it is given); ``bframes``: the encoder's maximum consecutive B-frames.
    - ``options``: extra encoder options; ``container_options``: muxer options,
      e.g. ``{"movflags": "faststart"}`` to put an MP4's index at the front.
    - ``audio``: add a 1 kHz AAC (MP2 in AVI) track as long as the video; a codec name (``"mp3"``)
      picks another encoder.
    - ``on_packet(packet, i)``: called with the ``i``-th video packet (decode order)
      before it is muxed; change ``packet.pts`` / ``packet.dts`` in place, or return
      ``None`` to drop it.

    The container comes from the suffix. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    fps = Fraction(fps)
    width, height = size
    if pts is not None:
        if len(pts) != frames:
            raise ValueError(f"{len(pts)} pts for {frames} frames")
        time_base = time_base or Fraction(1, 1000)
        ticks = [_exact(t) / time_base for t in pts]
        if any(t.denominator != 1 for t in ticks):
            raise ValueError(f"every pts must be a multiple of time_base {time_base}")
        frame_pts = [int(t) for t in ticks]
    else:
        time_base = time_base or 1 / fps
        frame_pts = [int(Fraction(i) / fps / time_base) for i in range(frames)]
    labels = list(range(frames)) if labels is None else list(labels)
    opts = dict(options or {})
    if gop is not None and codec == "libx264":
        opts.setdefault("x264-params", "scenecut=0")
    with av.open(str(path), mode="w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps, options=opts)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        audio_codec = audio if isinstance(audio, str) else "mp2" if path.suffix.lower() == ".avi" else "aac"
        audio_stream = _add_audio(out, audio_codec) if audio else None
        audio_pts = 0
        counter = [0]

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                if on_packet is not None:
                    i = counter[0]
                    counter[0] += 1
                    packet = on_packet(packet, i)
                    if packet is None:
                        continue
                out.mux(packet)

        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(draw_label(labels[i], size), format="yuv420p")
            frame.pts = frame_pts[i]
            frame.time_base = time_base
            mux(stream.encode(frame))
            if audio_stream is not None:
                until = frame_pts[i] * time_base + 1 / fps
                audio_pts = _write_audio(out, audio_stream, audio_pts, until)
        mux(stream.encode(None))
        if audio_stream is not None:
            out.mux(audio_stream.encode(None))
    return path


def _exact(t: Fraction | float) -> Fraction:
    """A time in seconds as written (``0.1`` is 1/10, not the nearest binary float)."""
    return Fraction(str(t)) if isinstance(t, float) else Fraction(t)


def make_audio(path: str | Path, *, seconds: float = 1.0, codec: str = "aac", rate: int = 44100,
               cover: bool = False) -> Path:
    """Write an audio-only file (a 1 kHz tone): ``.m4a`` with aac, ``.wav`` with pcm_s16le, ``.mp3``...

    ``cover``: embed a JPEG picture as cover art (an "attached picture" video stream;
    ``.mp3`` only).
    """
    path = Path(path)
    with av.open(str(path), mode="w") as out:
        stream = _add_audio(out, codec, rate)
        if cover:
            art = out.add_stream("mjpeg")
            art.width, art.height, art.pix_fmt = 64, 48, "yuvj420p"
            art.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in art.encode(picture) + art.encode(None):
                out.mux(packet)
        _write_audio(out, stream, 0, Fraction(str(seconds)))
        out.mux(stream.encode(None))
    return path


def _add_audio(out: av.container.OutputContainer, codec: str, rate: int = 44100) -> av.audio.AudioStream:
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "mono"
    return stream


def _write_audio(out: av.container.OutputContainer, stream: av.audio.AudioStream, start: int,
                 until: Fraction) -> int:
    """Encode a tone from sample ``start`` up to ``until`` seconds; returns the next sample number."""
    rate = stream.codec_context.sample_rate
    chunk = stream.codec_context.frame_size or 1024
    while start < until * rate:
        t = np.arange(start, start + chunk) / rate
        tone = (0.2 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None, :]
        # PyAV converts to the encoder's sample format
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
        start += chunk
    return start


@dataclass(frozen=True)
class RefFrame:
    """One frame of an independent full decode: display ``index``, ``time`` from the first frame."""

    index: int
    pts: int | None
    time: Fraction | None
    label: int


def decode_reference(path: str | Path) -> list[RefFrame]:
    """Decode every frame with plain PyAV (no seeking, no vidinfer code): the ground truth.

    ``time`` is ``(pts - first pts) * time_base`` as the decoder reports it, ``None``
    where a frame has no pts; ``label`` is what ``draw_label`` put in its pixels.
    Packets the decoder rejects are skipped, as a player would.
    """
    frames: list[RefFrame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first: int | None = None
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                continue
            for frame in decoded:
                if first is None and frame.pts is not None:
                    first = frame.pts
                time = (frame.pts - first) * stream.time_base if frame.pts is not None else None
                frames.append(RefFrame(len(frames), frame.pts, time, frame_label(frame)))
    return frames


def reference_samples(
    times: Sequence[Fraction],
    infer_fps: Fraction,
    start: Fraction = Fraction(0),
    end: Fraction | None = None,
) -> list[int]:
    """The sampling rule by brute force: the chosen frame index for every sample ``k``.

    ``t_k = start + k / infer_fps`` for every ``t_k <= times[-1]`` (and ``< end``);
    the frame whose time is nearest ``t_k`` wins, ties to the earlier frame.
    """
    chosen = []
    k = 0
    while True:
        target = start + Fraction(k) / infer_fps
        if target > times[-1] or (end is not None and target >= end):
            return chosen
        chosen.append(min(range(len(times)), key=lambda i: (abs(times[i] - target), i)))
        k += 1

"""Pictures of moments: a JPEG thumbnail of one frame, and an MP4 clip of a time range, cut from the source.

A clip is a stream copy (no re-encode, the source's own pictures) when its start and its end fall on
keyframes (or the end is the video's) of an H.264/HEVC video whose timestamps can be trusted; otherwise
the range is decoded and re-encoded with libx264's ``ultrafast`` preset, which is quick and good enough
for a preview. Clips hold the video only.
"""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path

import av

from vidinfer.core.video import VideoInfo, iter_frames, probe
from vidinfer.errors import InvalidInput

#: codecs whose packets an MP4 takes as they are
COPY_CODECS = frozenset({"h264", "hevc"})
#: the longest clip cut on request, in seconds
MAX_CLIP_SECONDS = 120.0
THUMBNAIL_WIDTH = 320


def thumbnail(video: str, time: float, width: int = THUMBNAIL_WIDTH) -> bytes:
    """A JPEG of the frame shown at ``time`` seconds (the last at or before it), ``width`` pixels wide."""
    from PIL import Image

    info = probe(video)
    chosen = None
    for decoded in iter_frames(info, start=max(0.0, time), threads=1):
        if chosen is not None and decoded.time > Fraction(str(time)) + Fraction(1, 1000):
            break
        chosen = decoded
    if chosen is None:
        raise InvalidInput(f"no frame of the video at {time:.3f} s", code="invalid_range")
    height = max(2, round(width * info.height / info.width / 2) * 2)
    image = Image.fromarray(chosen.to_rgb((width, height)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _copyable(info: VideoInfo, start: float, end: float) -> tuple[int, int | None] | None:
    """The pts of the keyframes the range starts and ends on (None: the video's end), where the stream
    can be copied: both ends within half a frame of a keyframe, or the end at or past the video's end."""
    if info.codec not in COPY_CODECS or not info.display_pts or not info.keyframes or info.pts_in_decode_order \
            or info.damage or not info.orientation.upright:
        return None
    half = Fraction(1, 2) / info.fps / info.time_base

    def keyframe(t: float) -> int | None:
        target = info.display_pts[0] + Fraction(str(t)) / info.time_base
        return next((pts for pts, _ in info.keyframes if abs(pts - target) <= half), None)

    first = keyframe(start)
    if first is None:
        return None
    if end >= info.duration - float(Fraction(1, 2) / info.fps):
        return first, None
    last = keyframe(end)
    return None if last is None else (first, last)


def cut(video: str, start: float, end: float, output: Path) -> str:
    """Write the range ``[start, end)`` of ``video`` to ``output`` (MP4); returns ``"copy"`` or ``"encode"``."""
    if not 0 <= start < end:
        raise InvalidInput(f"a clip needs 0 <= start < end, got {start}..{end}", code="invalid_range")
    if end - start > MAX_CLIP_SECONDS:
        raise InvalidInput(f"a clip is at most {MAX_CLIP_SECONDS:.0f} s long; this moment lasts {end - start:.1f} s",
                           code="clip_too_long")
    info = probe(video)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".part")
    try:
        keyframes = _copyable(info, start, end)
        mode = "copy" if keyframes is not None else "encode"
        frames = _copy(info, *keyframes, partial) if keyframes is not None else _encode(info, start, end, partial)
        if not frames:
            raise InvalidInput("no frame of the video lies in the moment's range", code="invalid_range")
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return mode


def _copy(info: VideoInfo, keyframe: int, until: int | None, output: Path) -> int:
    """The packets from keyframe ``keyframe`` up to keyframe ``until`` (decode order), retimed to start at 0."""
    frames = 0
    with av.open(info.path) as src, av.open(str(output), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = src.streams.video[0]
        dst = out.add_stream_from_template(stream)
        origin = None
        for packet in src.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            if origin is None:
                if not (packet.is_keyframe and packet.pts == keyframe):
                    continue
                origin = packet.dts if packet.dts is not None else packet.pts
            elif packet.is_keyframe and packet.pts == until:
                break
            packet.pts -= origin
            packet.dts = None if packet.dts is None else packet.dts - origin
            packet.stream = dst
            out.mux(packet)
            frames += 1
    return frames


def _encode(info: VideoInfo, start: float, end: float, output: Path) -> int:
    """The frames shown in ``[start, end)``, re-encoded fast (libx264 ultrafast)."""
    width, height = info.width - info.width % 2, info.height - info.height % 2
    s, e = Fraction(str(start)), Fraction(str(end))
    tb = Fraction(1, 90_000)
    frames, first, last = 0, None, -1
    with av.open(str(output), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=info.fps, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = tb
        for decoded in iter_frames(info, start=start, threads=1):
            if decoded.time < s:
                continue
            if decoded.time >= e:
                break
            first = decoded.time if first is None else first
            frame = decoded.displayed()
            if (frame.width, frame.height) != (width, height) or frame.format.name != "yuv420p":
                frame = frame.reformat(width=width, height=height, format="yuv420p")
            frame.pts = last = max(round((decoded.time - first) / tb), last + 1)
            frame.time_base = tb
            for packet in stream.encode(frame):
                out.mux(packet)
            frames += 1
        for packet in stream.encode(None):
            out.mux(packet)
    return frames

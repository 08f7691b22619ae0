"""Probing and decoding video with PyAV.

Three ideas matter here:

* Frames are emitted in display order (the order the decoder outputs them) and
  each gets a *display index* (0, 1, 2, ...) and a *display time* relative to the
  first frame. While the decoder's timestamps keep increasing they are used as they
  are; once one is missing or goes backwards (AVI with B-frames, badly muxed MP4,
  raw streams) the stream's times come from the probed packet timestamps sorted
  into display order, else from one nominal frame duration per frame, so times
  never decrease.
* Only frames that are sampled are ever converted out of YUV; everything else is
  decoded and dropped (converting every frame halves decode throughput).
* Frames nothing refers to and no sample wants are not even decoded. H.264 and HEVC
  encoders with B-frames leave about half the frames as non-reference pictures; told
  which timestamps it ``wanted``, the decoder skips those packets' pictures
  (``skip_frame`` NONREF per packet). The frames it does decode are bit-identical,
  their display indices come from the probed timestamps, and the decode costs about
  a third less CPU (bench/README.md). Files whose timestamps cannot be trusted are
  decoded whole.

Every PyAV error is turned into a ``DecodeError`` with an actionable message.
"""

from __future__ import annotations

import bisect
import logging
import os
import stat
from itertools import chain, islice
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error
import cv2
import numpy as np

from vidinfer.core.mpeg4 import PictureCounter
from vidinfer.core.orientation import UPRIGHT, Orientation, of_frame
from vidinfer.errors import DecodeError, NotFound

log = logging.getLogger(__name__)

#: codec threads for decoding alone (``threads=0``); PERFORMANCE.md: 2 beats libavcodec's own pick on 2 cores.
DEFAULT_DECODE_THREADS = min(os.cpu_count() or 2, 8)

#: the largest frame accepted, in pixels: 8K UHD (7680x4320) fits, a forged header does not
MAX_SIDE = 8192
MAX_PIXELS = MAX_SIDE * MAX_SIDE

#: codecs whose decoders honour ``skip_frame`` NONREF (and mark which pictures are references)
SKIP_CODECS = frozenset({"h264", "hevc"})

#: keyframes tried, each further back, before a seek gives up and decodes from the start
_SEEK_KEYFRAMES = 3
#: frames a seek may decode before the keyframe it aimed at shows up
_SEEK_LEADING_FRAMES = 64


@dataclass(frozen=True)
class VideoInfo:
    """What vidinfer sees in a video file, from one demux pass (and the first frame's display matrix).

    ``width`` and ``height`` are the displayed size: the stored one turned by ``orientation``.
    """

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration: float
    keyframe_interval: float | None
    has_audio: bool
    #: presentation times (stream time base units) of every video packet that yields a
    #: frame, sorted: the display order. Empty where the container gives no usable timestamps.
    display_pts: tuple[int, ...] = field(default=(), repr=False)
    time_base: Fraction = field(default=Fraction(1, 1), repr=False)
    #: (pts, dts) of every keyframe, in display order: where a seek can land
    keyframes: tuple[tuple[int, int | None], ...] = field(default=(), repr=False)
    #: the container's timestamps follow decoding order although the codec reorders
    #: frames (H.264 in AVI, badly muxed MP4): the decoder's frame timestamps are then
    #: out of order, so frame times come from ``display_pts`` and seeking is off
    pts_in_decode_order: bool = field(default=False, repr=False)
    #: the rate the container declares (what a player's info panel shows), where the file has
    #: timestamps; above ``fps`` when the stored pictures are sparser (dropped or held frames)
    declared_fps: Fraction | None = field(default=None, repr=False)
    #: set when the file holds less than its header promises (cut short while being
    #: uploaded or recorded, or unreadable past some point): what is wrong, in words
    damage: str | None = field(default=None, repr=False)
    #: the display matrix, applied to every decoded frame (core/orientation.py)
    orientation: Orientation = UPRIGHT
    #: the displayed pixels' width over their height (not 1: anamorphic); results stay in pixels
    sample_aspect_ratio: Fraction = Fraction(1)

    @property
    def max_infer_fps(self) -> Fraction:
        """The highest infer_fps accepted: the declared rate, or the measured one where that is higher."""
        return max(self.fps, self.declared_fps or self.fps)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (what ``vidinfer probe`` prints)."""
        return {
            "path": self.path,
            "container": self.container,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "fps_float": round(float(self.fps), 4),
            "declared_fps": (f"{self.declared_fps.numerator}/{self.declared_fps.denominator}"
                             if self.declared_fps else None),
            "frame_count": self.frame_count,
            "duration": round(self.duration, 4),
            "keyframe_interval": self.keyframe_interval,
            "has_audio": self.has_audio,
            "rotation": self.orientation.rotation,
            "mirrored": self.orientation.mirrored,
            "sample_aspect_ratio": f"{self.sample_aspect_ratio.numerator}/{self.sample_aspect_ratio.denominator}",
        }


@dataclass(slots=True)
class DecodedFrame:
    """One decoded frame in display order; ``time`` is seconds from the first frame.

    ``frame`` is as stored; ``to_rgb`` and ``displayed`` turn it by ``orientation``.
    """

    index: int
    time: Fraction
    frame: av.VideoFrame
    orientation: Orientation = UPRIGHT

    def to_rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """Convert to a displayed RGB ``uint8`` array of ``size`` (width, height), resizing if asked."""
        if size is not None:
            size = self.orientation.displayed_size(*size)  # the stored picture's size
        return self.orientation.apply(self._stored_rgb(size))

    def luma_thumbnail(self, size: tuple[int, int] = (64, 36)) -> np.ndarray:
        """The picture's brightness at ``size`` (stored orientation, ``float32`` 0-255): what
        ``skip_static`` compares. Straight from the Y plane where the frame is YUV, so it costs a
        resize of one plane, not a colour conversion."""
        frame = self.frame
        width, height = size
        if frame.format.name in _LUMA_FIRST:
            small = cv2.resize(_plane(frame, 0, frame.width, frame.height), (width, height),
                               interpolation=cv2.INTER_AREA)
        else:
            small = frame.reformat(width=width, height=height, format="gray").to_ndarray()
        return small.astype(np.float32)

    def displayed(self) -> av.VideoFrame:
        """The frame as a player shows it: ``frame`` itself when upright, else a turned RGB copy."""
        if self.orientation.upright:
            return self.frame
        return av.VideoFrame.from_ndarray(self.to_rgb(), format="rgb24")

    def _stored_rgb(self, size: tuple[int, int] | None) -> np.ndarray:
        """Convert the stored picture to RGB at ``size``.

        A downscaled 4:2:0 frame is resized plane by plane while still YUV, then
        converted at the small size (the fastest exact path in PERFORMANCE.md);
        anything else goes through one swscale pass.
        """
        frame = self.frame
        if size is None or size == (frame.width, frame.height):
            return frame.to_ndarray(format="rgb24")
        if _planar_downscale_ok(frame, size):
            return _yuv420p_to_rgb(frame, size)
        width, height = size
        return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


#: 8-bit formats whose first plane is the luma, row by row
_LUMA_FIRST = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"})


def _planar_downscale_ok(frame: av.VideoFrame, size: tuple[int, int]) -> bool:
    """Limited-range 4:2:0 (what H.264/HEVC/VP9 decode to), shrunk to an even size."""
    width, height = size
    return (frame.format.name == "yuv420p" and width % 2 == 0 and height % 2 == 0
            and 0 < width <= frame.width and 0 < height <= frame.height
            and frame.width % 2 == 0 and frame.height % 2 == 0)


def _plane(frame: av.VideoFrame, index: int, width: int, height: int) -> np.ndarray:
    """A view of one plane's pixels, without its row padding."""
    plane = frame.planes[index]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]


def _yuv420p_to_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """Shrink Y, U and V to ``size`` with area averaging, then convert (BT.601, like swscale's default)."""
    width, height = size
    packed = np.empty((height * 3 // 2, width), np.uint8)  # I420: Y, then U and V one after the other
    chroma = packed[height:].reshape(2, height // 2, width // 2)
    fw, fh = frame.width, frame.height
    cv2.resize(_plane(frame, 0, fw, fh), (width, height), dst=packed[:height], interpolation=cv2.INTER_AREA)
    for i in (1, 2):
        cv2.resize(_plane(frame, i, fw // 2, fh // 2), (width // 2, height // 2), dst=chroma[i - 1],
                   interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420)


def open_container(path: str) -> av.container.InputContainer:
    """Open a media file, mapping every failure to a vidinfer error."""
    local = "://" not in path
    if local and not os.path.exists(path):
        raise NotFound(f"no such file: {path}", code="file_not_found")
    if local and os.path.isdir(path):
        raise DecodeError(f"{path} is a directory, not a video", code="not_a_video")
    if local and not stat.S_ISREG(os.stat(path).st_mode):
        # a FIFO or a device would be read for ever (or block until a writer comes)
        raise DecodeError(f"{path} is not a regular file (a pipe, socket or device), not a video",
                          code="not_a_video")
    if local and os.path.getsize(path) == 0:
        raise DecodeError(f"{path} is empty (0 bytes)", code="not_a_video")
    try:
        return av.open(path, mode="r", timeout=30.0)
    except av.error.FileNotFoundError as exc:
        raise NotFound(f"no such file: {path}", code="file_not_found") from exc
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        if local and _looks_like_mp4(path):
            raise DecodeError(
                f"{path} is an MP4/MOV file without its index (the moov box): it was cut short while "
                "being uploaded or recorded; re-export it, or remux it with the index at the front "
                "(ffmpeg -movflags faststart)", code="not_a_video"
            ) from exc
        raise DecodeError(
            f"{path} is not a readable video ({_reason(exc)})", code="not_a_video"
        ) from exc


def _looks_like_mp4(path: str) -> bool:
    with open(path, "rb") as file:
        return file.read(12)[4:8] in (b"ftyp", b"mdat", b"moov", b"wide", b"free")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip() or type(exc).__name__


#: demuxers that render text as pictures (a .txt file opens as "tty" with an "ansi" video stream)
_TEXT_FORMATS = frozenset({"tty", "bintext", "xbin", "adf", "idf"})


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    fmt = container.format.name
    if fmt in _TEXT_FORMATS:
        raise DecodeError(f"{path} is text, not a video", code="not_a_video")
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise DecodeError(f"{path} is a still image ({fmt.removesuffix('_pipe')}), not a video", code="not_a_video")
    # cover art in an audio file is a one-picture "video" stream: not a video
    videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not videos:
        kinds = sorted({s.type for s in container.streams} - {"video"})
        if "audio" in kinds:
            raise DecodeError(f"{path} has no video stream, only {', '.join(kinds)}", code="no_video_stream")
        raise DecodeError(f"{path} is not a video: it has no video stream ({', '.join(kinds) or 'no streams'})",
                          code="not_a_video")
    # the stream a player shows: the first one marked default, else the first
    stream = next((s for s in videos if s.disposition & av.stream.Disposition.default), videos[0])
    if stream.codec_context is None or not stream.codec_context.width:
        raise DecodeError(f"{path}: the video stream has no usable codec or size", code="not_a_video")
    return stream


def probe(path: str) -> VideoInfo:
    """Describe a video by demuxing its packets once; exact frame count, no decoding.

    Packets the container marks as discarded (the part of an MP4 edit list before the
    start, e.g. a cut made without re-encoding) are decoded for reference but never
    shown, so they count neither as frames nor towards the display times.
    """
    with open_container(path) as container:
        stream = _video_stream(container, path)
        _check_size(stream, path)
        time_base = stream.time_base or Fraction(1, 90000)
        scan = _Scan(stream)
        error = None
        try:
            for packet in container.demux():
                scan.add(packet)
        except av.error.FFmpegError as exc:
            error = _reason(exc)
            log.warning("%s: demuxing stopped after %d video packets (%s)", path, scan.count, error)
        if scan.count == 0:
            raise DecodeError(f"{path} contains no video frames", code="no_video_frames")
        orientation = _orientation(path)
        width, height = orientation.displayed_size(stream.codec_context.width, stream.codec_context.height)
        pts = scan.display_pts()
        timestamps_ok = scan.missing_pts == 0 and len(set(pts)) == len(pts) == scan.count
        if not timestamps_ok:
            pts = []
        fps = _frame_rate(stream, pts, time_base)
        if len(pts) > 1:
            duration = float((pts[-1] - pts[0]) * time_base + 1 / fps)
        else:
            duration = float(scan.count / fps)
        gaps = [b - a for a, b in zip(scan.keyframe_counts, scan.keyframe_counts[1:])]
        damage = _damage(container, scan, fps, error)
        if damage:
            log.warning("%s: %s", path, damage)
        return VideoInfo(
            path=path,
            container=container.format.name,
            codec=stream.codec_context.name,
            width=width,
            height=height,
            fps=fps,
            frame_count=scan.count,
            duration=duration,
            keyframe_interval=float(np.median(gaps)) if gaps else None,
            has_audio=bool(container.streams.audio),
            display_pts=tuple(pts),
            time_base=time_base,
            keyframes=tuple(sorted(scan.keyframes, key=lambda keyframe: keyframe[0])) if timestamps_ok else (),
            pts_in_decode_order=(bool(pts) and scan.increasing and bool(stream.codec_context.has_b_frames)
                                 and _emits_out_of_order(path)),
            declared_fps=_declared_rate(stream) if pts else None,
            damage=damage,
            orientation=orientation,
            sample_aspect_ratio=_sample_aspect_ratio(stream, orientation),
        )


def _check_size(stream: Any, path: str) -> None:
    """Refuse a frame size no real video has: a header claiming it would have the decoder allocate GBs."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > MAX_PIXELS:
        raise DecodeError(f"{path} declares {width}x{height} frames, over the limit of {MAX_PIXELS} pixels "
                          f"({MAX_SIDE}x{MAX_SIDE})", code="frame_too_large")


class _Scan:
    """What one pass over the packets tells: the video's timestamps and where the data ends."""

    def __init__(self, video: Any) -> None:
        self.video = video
        self.pts: list[int] = []
        #: (pts, dts) of keyframes, and their positions among the video packets
        self.keyframes: list[tuple[int, int | None]] = []
        self.keyframe_counts: list[int] = []
        self.count = 0
        self.missing_pts = 0
        #: pts strictly increasing in decoding order
        self.increasing = True
        #: the end (seconds) of the last packet of any stream
        self.data_end: Fraction | None = None
        #: MPEG-4 Part 2 packets may hold two pictures or none (packed B-frames, N-VOPs)
        self.counter = PictureCounter(video.codec_context.extradata) if video.codec_context.name == "mpeg4" else None
        #: timestamps of the packets that code no picture
        self.placeholder_pts: list[int] = []
        #: pictures beyond one per packet (packed B-frames)
        self.packed = 0

    def add(self, packet: av.Packet) -> None:
        if packet.size == 0:
            return
        if packet.pts is not None and packet.time_base is not None:
            end = (packet.pts + (packet.duration or 0)) * packet.time_base
            self.data_end = end if self.data_end is None else max(self.data_end, end)
        if packet.stream_index != self.video.index or packet.is_discard:
            return
        pictures = self.counter.pictures(bytes(packet)) if self.counter is not None else 1
        if pictures == 0:
            if packet.pts is not None:
                self.placeholder_pts.append(packet.pts)
            return
        self.packed += pictures - 1
        if packet.is_keyframe:
            self.keyframe_counts.append(self.count)
            if packet.pts is not None:
                self.keyframes.append((packet.pts, packet.dts))
        self.count += pictures
        if packet.pts is None:
            self.missing_pts += 1
        else:
            self.increasing = self.increasing and (not self.pts or packet.pts > self.pts[-1])
            self.pts.append(packet.pts)

    def display_pts(self) -> list[int]:
        """The pictures' timestamps, sorted. A packed stream's packets carry one timestamp for two
        pictures, and the N-VOP after each holds the slot of the picture packed before it: the
        pictures take the earliest slots, in order (the one slot left over is the encoder's delay)."""
        if not self.packed:
            return sorted(self.pts)
        return sorted(self.pts + self.placeholder_pts)[:self.count]


def _sample_aspect_ratio(stream: Any, orientation: Orientation) -> Fraction:
    """The container's pixel aspect ratio, else the codec's, else square; of the displayed pixels."""
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar and sar > 0:
            sar = Fraction(sar).limit_denominator(10_000)
            return 1 / sar if orientation.swaps_sides else sar
    return Fraction(1)


def _orientation(path: str, packets: int = 64) -> Orientation:
    """The first frame's display matrix (decoders copy the stream's onto it), applied to every frame.

    Corrupt packets are passed over; with no frame among the first ``packets``, upright.
    """
    with open_container(path) as container:
        stream = _video_stream(container, path)
        try:
            for packet in islice(container.demux(stream), packets):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue
                if frames:
                    return of_frame(frames[0])
        except av.error.FFmpegError as exc:
            log.info("%s: no frame decoded for the display matrix (%s)", path, _reason(exc))
    return UPRIGHT


def _emits_out_of_order(path: str, frames: int = 24) -> bool:
    """Whether the decoder hands out the first ``frames`` frames with timestamps out of order.

    Asked only when the container's timestamps increase in decoding order although the
    codec may reorder frames: either it used no B-frames (fine) or the file was muxed
    with decoding-order timestamps (H.264 in AVI, some broken MP4s).
    """
    last = None
    with open_container(path) as container:
        stream = _video_stream(container, path)
        try:
            for frame in islice(container.decode(stream), frames):
                if frame.pts is None or (last is not None and frame.pts <= last):
                    return True
                last = frame.pts
        except av.error.FFmpegError:
            pass
    return False


#: containers whose header states the duration (rather than FFmpeg estimating it)
_HEADER_DURATION = ("mov", "matroska", "avi")


def _damage(container: Any, scan: _Scan, fps: Fraction, error: str | None) -> str | None:
    """Why the file holds less than it promises, or None."""
    if error is not None:
        return f"the file is damaged: it cannot be read past its {scan.count}th video frame ({error})"
    if not container.format.name.startswith(_HEADER_DURATION) or not container.duration or scan.data_end is None:
        return None
    declared = Fraction(container.duration, 1_000_000)
    data_end = scan.data_end - Fraction(container.start_time or 0, 1_000_000)
    if declared - data_end > max(Fraction(1, 10), 2 / fps):
        return (f"the file is cut short: its data ends at {float(data_end):.3f}s of the "
                f"{float(declared):.3f}s its header declares")
    return None


def _declared_rate(stream: Any) -> Fraction | None:
    """The frame rate the container states (an AVI's header, an MP4's frames over duration), or None."""
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate).limit_denominator(100_000) if rate and 0 < rate < 1000 else None


def _frame_rate(stream: Any, pts: list[int], time_base: Fraction) -> Fraction:
    """The average frame rate over the frames' own timestamps, as exactly as possible.

    A constant-rate video keeps the rate its container declares (30000/1001, not an
    approximation of it) when its timestamps agree with it to within rounding; a
    variable-rate one gets frames per second over the time its frames span, whatever
    the container declares. Without timestamps (raw streams) the codec's own rate wins
    over the demuxer's default.
    """
    declared = [Fraction(r).limit_denominator(100_000)
                for r in (stream.average_rate, stream.guessed_rate, stream.codec_context.framerate)
                if r and 0 < r < 1000]
    if len(pts) > 1 and pts[-1] > pts[0]:
        span = (pts[-1] - pts[0]) * time_base
        measured = Fraction(len(pts) - 1) / span
        for rate in declared:
            # per-frame rounding to the time base does not accumulate: allow two ticks
            if abs(Fraction(len(pts) - 1) / rate - span) <= 2 * time_base:
                return rate
        return measured
    if not pts:
        # a raw stream: the demuxer's rate is its default (25); the codec knows better
        declared = [Fraction(r).limit_denominator(100_000)
                    for r in (stream.codec_context.framerate, stream.guessed_rate, stream.average_rate)
                    if r and 0 < r < 1000]
    if declared:
        return declared[0]
    raise DecodeError("the video declares no frame rate and its timestamps give none", code="no_frame_rate")


@dataclass
class DecodeReport:
    """What happened while decoding: filled in as frames are produced."""

    frames_decoded: int = 0
    #: frames not decoded because no sample wanted them and no other frame refers to them
    frames_skipped: int = 0
    errors: int = 0
    #: display time (s) after which frames were lost, if any were (the earliest reported)
    lost_after: float | None = None
    messages: list[str] = field(default_factory=list)

    def lost(self, after: Fraction | None, message: str) -> None:
        """Record that frames were lost after display time ``after`` (None: before any frame)."""
        self.errors += 1
        at = float(after) if after is not None else 0.0
        self.lost_after = at if self.lost_after is None else min(self.lost_after, at)
        if message not in self.messages:
            self.messages.append(message)


def can_skip_frames(info: VideoInfo) -> bool:
    """Whether frames of this video can be left undecoded: a codec that marks
    non-reference pictures, and timestamps that give every frame's display index."""
    return (info.codec in SKIP_CODECS and bool(info.display_pts) and len(info.display_pts) == info.frame_count
            and not info.pts_in_decode_order and info.damage is None)


def iter_frames(
    info: VideoInfo,
    *,
    start: float = 0.0,
    threads: int = DEFAULT_DECODE_THREADS,
    report: DecodeReport | None = None,
    wanted: frozenset[int] | None = None,
) -> Iterator[DecodedFrame]:
    """Yield every frame in display order with its display index and time.

    ``wanted``: the packet timestamps of the frames the caller needs. Where
    ``can_skip_frames`` allows, non-reference frames outside it are not decoded, so
    only some frames are yielded, each still with its true display index and time.

    With ``start`` > 0 and trustworthy timestamps, seek to the last keyframe at or
    before ``start`` and recover display indices from the probed packet timestamps;
    a seek that lands after ``start`` is retried from an earlier keyframe, and
    otherwise the video is decoded from the beginning. Frames before ``start`` may
    still be yielded (the caller picks), but the frame at or before ``start`` always
    is. Corrupt packets are skipped and recorded in ``report`` rather than ending the
    whole decode, as is a file that ends before all its frames.
    """
    report = report if report is not None else DecodeReport()
    if wanted is not None and (not can_skip_frames(info) or len(wanted) >= len(info.display_pts)):
        wanted = None  # nothing may be skipped, or nothing would be
    if start > 0 and info.display_pts and info.keyframes and not info.pts_in_decode_order:
        target = info.display_pts[0] + int(Fraction(str(start)) / info.time_base)
        # from within the first GOP, decoding from the start costs no more than a seek
        if len(info.keyframes) > 1 and target >= info.keyframes[1][0]:
            with open_container(info.path) as container:
                stream = _open_stream(container, info, threads)
                found = _seek(container, stream, info, target, wanted)
                if found is not None:
                    index, frames, clock = found
                    # what went wrong before the keyframe is no loss; from here on it is
                    clock.report = report
                    yield from clock.run(frames, index)
                    return
            log.info("%s: seeking to %.3fs missed; decoding from the start", info.path, start)
    with open_container(info.path) as container:
        stream = _open_stream(container, info, threads)
        clock = _Clock(info, report, wanted=wanted)
        yield from clock.run(_decode(container, stream, clock), 0)


def _open_stream(container: Any, info: VideoInfo, threads: int) -> Any:
    stream = _video_stream(container, info.path)
    stream.thread_type = "AUTO"
    stream.thread_count = threads or DEFAULT_DECODE_THREADS
    return stream


def _seek(container: Any, stream: Any, info: VideoInfo, target: int,
          wanted: frozenset[int] | None) -> tuple[int, Iterator[av.VideoFrame], _Clock] | None:
    """Position the decoder so its first frame is the last keyframe at or before ``target``.

    Returns the first frame's display index, the frames from it on and the clock that
    has timed them, or None when no seek lands there. Matroska seeks by presentation
    timestamps, MP4 and MPEG-TS by decoding timestamps (an earlier one when B-frames
    reorder), so each keyframe is tried at its pts and then at its dts, going back a
    keyframe at a time, and every landing is checked. Frames the decoder emits before
    the keyframe (open-GOP leading pictures, decoded without their references) are
    dropped: none of them is nearer ``target`` than the keyframe.
    """
    last = bisect.bisect_right(info.keyframes, target, key=lambda keyframe: keyframe[0])
    tries = [(pts, at) for pts, dts in reversed(info.keyframes[max(0, last - _SEEK_KEYFRAMES):last])
             for at in dict.fromkeys(t for t in (pts, dts) if t is not None)]
    for keyframe, at in tries:
        try:
            container.seek(at, stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as exc:
            log.info("%s: seek failed (%s)", info.path, _reason(exc))
            return None
        clock = _Clock(info, DecodeReport(), base=info.display_pts[0], wanted=wanted)
        frames = _decode(container, stream, clock)
        first = next((f for f in islice(frames, _SEEK_LEADING_FRAMES) if f.pts is not None and f.pts >= keyframe),
                     None)
        if first is None or first.pts > target:
            continue  # landed after the end or too late: go further back
        position = bisect.bisect_left(info.display_pts, first.pts)
        if position == len(info.display_pts) or info.display_pts[position] != first.pts:
            continue  # a frame the index does not know
        return position, chain([first], frames), clock
    return None


class _Clock:
    """Gives each decoded frame its display index and display time, and notices lost frames.

    The decoder's own timestamps are used while they keep increasing. After the first
    one that is missing or goes backwards, the display time of frame ``i`` is the
    ``i``-th smallest packet timestamp (what the decoder's timestamps would have been
    had the file been muxed right), else the previous time plus one nominal frame.

    With ``wanted`` (frames may be skipped) a frame's display index is the position
    of its timestamp among the probed ones, and a frame missing from the decoder's
    output counts as lost only if it was wanted. Should the timestamps stop making
    sense after all, skipping stops (``wanted`` becomes None) and the rest is decoded.

    Frames the decoder's timestamps jump over are only *probably* lost: should a
    timestamp later go backwards, the frame was merely stamped late, and losses are
    judged from the count of frames emitted at the end.
    """

    def __init__(self, info: VideoInfo, report: DecodeReport, base: int | None = None,
                 wanted: frozenset[int] | None = None) -> None:
        self.info = info
        self.report = report
        self.wanted = wanted
        #: frames were skipped, then skipping stopped
        self.skipped = False
        self.trusted = not info.pts_in_decode_order
        if base is None and (not self.trusted or wanted is not None):
            # skipping, the first frame decoded need not be the first shown (a cut's first
            # frame is often a B-frame nothing refers to): times count from the first shown
            base = info.display_pts[0]
        self.base = base
        self.last_pts: int | None = None
        self.last_time: Fraction | None = None
        #: position in ``display_pts`` of the last frame seen there
        self.cursor = -1
        #: (after, message) of frames the decoder's timestamps jumped over, reported at the end
        self.jumped: list[tuple[Fraction | None, str]] = []

    def time_of(self, index: int, pts: int | None) -> Fraction:
        info, tb = self.info, self.info.time_base
        if self.base is None:
            self.base = pts if pts is not None else (info.display_pts[0] if info.display_pts else None)
        if self.trusted and pts is not None and (self.last_pts is None or pts > self.last_pts):
            self.last_pts = pts
            if not self._skip_to(pts):
                self._stop_skipping()
            return (pts - self.base) * tb
        self._stop_skipping()
        self.trusted = False
        self.jumped.clear()  # frames seemingly jumped over may be the ones arriving now: count at the end
        last = self.last_time
        if index < len(info.display_pts) and self.base is not None:
            time = (info.display_pts[index] - self.base) * tb
        elif pts is not None and self.base is not None and last is not None and (pts - self.base) * tb > last:
            time = (pts - self.base) * tb
        elif last is None:
            time = Fraction(0)
        else:
            time = last + 1 / info.fps
        if self.skipped and info.display_pts and self.base is not None:
            # indices ran ahead of the frames emitted: none is shown after the video's last frame
            time = min(time, (info.display_pts[-1] - self.base) * tb)
        return time if last is None else max(time, last)

    def _stop_skipping(self) -> None:
        if self.wanted is not None:
            log.warning("%s: a frame's timestamp is not among the probed ones; decoding every frame from here",
                        self.info.path)
            self.wanted = None
            self.skipped = True

    def _skip_to(self, pts: int) -> bool:
        """Note frames of the index that the decoder passed over without emitting them.

        False when ``pts`` is not in the index.
        """
        position = bisect.bisect_left(self.info.display_pts, pts)
        if position == len(self.info.display_pts) or self.info.display_pts[position] != pts:
            return False
        if position > self.cursor + 1:
            lost = self._passed_over(self.cursor + 1, position)
            if lost:
                self.jumped.append(self._lost_message(lost, (pts - self.base) * self.info.time_base))
        self.cursor = position
        return True

    def _passed_over(self, first: int, stop: int) -> int:
        """Count frames ``first`` to ``stop`` (exclusive) of the index as skipped or lost; return the lost."""
        if self.wanted is None:
            return stop - first
        lost = sum(1 for p in self.info.display_pts[first:stop] if p in self.wanted)
        self.report.frames_skipped += stop - first - lost
        return lost

    def _lost_message(self, frames: int, until: Fraction | None) -> tuple[Fraction | None, str]:
        after = self.last_time
        span = f"after t={float(after or 0):.3f}s" + (f" up to t={float(until):.3f}s" if until is not None else "")
        return after, f"{frames} frame{'s' * (frames != 1)} {span} could not be decoded"

    def run(self, frames: Iterable[av.VideoFrame], index: int) -> Iterator[DecodedFrame]:
        info, report = self.info, self.report
        if index:
            self.cursor = index - 1
        for frame in frames:
            time = self.time_of(index, frame.pts)
            if self.wanted is not None:
                index = self.cursor
            self.last_time = time
            report.frames_decoded += 1
            yield DecodedFrame(index=index, time=time, frame=frame, orientation=info.orientation)
            index += 1
        for after, message in self.jumped:
            report.lost(after, message)
        seen = self.cursor + 1 if self.trusted and info.display_pts else index
        if seen < info.frame_count:
            lost = (self._passed_over(seen, info.frame_count) if self.trusted and info.display_pts
                    else info.frame_count - seen)
            if lost:
                report.lost(*self._lost_message(lost, None))
        if info.damage:
            report.lost(self.last_time, info.damage)


def _decode(container: Any, stream: Any, clock: _Clock) -> Iterator[av.VideoFrame]:
    """Decode every packet in order, skipping corrupt ones (recorded in the clock's report).

    While the clock has ``wanted`` timestamps, a packet outside them is decoded only if
    it is a reference picture (the decoder decides, from the bitstream).
    """
    context = stream.codec_context
    skipping = False
    for packet in _demux(container, stream, clock):
        if packet.pts is not None:
            skip = clock.wanted is not None and packet.pts not in clock.wanted
            if skip != skipping:
                context.skip_frame = "NONREF" if skip else "DEFAULT"
                skipping = skip
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            at = clock.last_time
            clock.report.lost(at, f"corrupt data after t={float(at or 0):.3f}s: {_reason(exc)}")
            continue
        yield from frames


def _demux(container: Any, stream: Any, clock: _Clock) -> Iterator[Any]:
    """Demux packets (plus the final flush packet), surviving a truncated or damaged file."""
    iterator = container.demux(stream)
    while True:
        try:
            packet = next(iterator)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            at = clock.last_time
            clock.report.lost(at, f"the file cannot be read after t={float(at or 0):.3f}s: {_reason(exc)}")
            # the flush packet still lets the decoder emit what it buffered
            yield av.Packet()
            return
        yield packet

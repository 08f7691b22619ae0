"""A corpus of broken and hostile inputs, made on the spot, small and deterministic.

Each ``Item`` writes one file (a few KiB to a few hundred KiB) into a folder and
says what vidinfer must make of it: a result (``status 0``, maybe ``partial``) or
one documented failure (a job status and an error code). ``tests/test_bad_inputs.py``
runs every item through the engine, the CLI and a real ``vidinfer serve``.

    python tests/corpus.py OUT_DIR      # write the whole corpus, print what was made

The random bytes come from a seeded generator and the encoders are given fixed
settings, so the same bytes come out on every run of the same FFmpeg build.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from videos import make_audio, make_video  # noqa: E402

__all__ = ["CORPUS", "Expect", "Item", "build", "DONE", "failed"]


@dataclass(frozen=True)
class Expect:
    """What must come of an item: ``status`` 0 (``partial`` as given) or a failure ``status`` and ``code``.

    ``upload`` is the HTTP status the signed-URL upload answers when the API refuses the
    file before any job exists (an empty upload), else None. ``cli_exit`` is the exit
    code of ``vidinfer infer``.
    """

    status: int
    code: str | None = None
    partial: bool = False
    upload: int | None = None

    @property
    def cli_exit(self) -> int:
        if self.status == 0:
            return 3 if self.partial else 0
        return {4: 4, 3: 2, 9: 2}[self.status]


DONE = Expect(0)
PARTIAL = Expect(0, partial=True)


def failed(code: str, status: int = 4, *, upload: int | None = None) -> Expect:
    return Expect(status, code, upload=upload)


@dataclass(frozen=True)
class Item:
    """One kind of bad input: ``make(folder)`` writes it and returns its path."""

    kind: str
    what: str
    make: Callable[[Path], Path]
    expect: Expect
    #: the name the API upload declares (hostile names live here; the file on disk stays tame)
    upload_name: str | None = None
    #: frames in the video, where the test can tell exactly how many samples a run gives
    frames: int | None = None


# -- writers ---------------------------------------------------------------------------------

def _gradient(size: tuple[int, int], i: int, alpha: bool = False) -> np.ndarray:
    """An RGB(A) frame that changes with ``i``: a diagonal ramp shifted by 8 levels per frame."""
    width, height = size
    ramp = (np.add.outer(np.arange(height), np.arange(width)) * 255 // max(1, width + height - 2)).astype(np.uint8)
    rgb = np.stack([ramp, np.roll(ramp, i, axis=1), np.full_like(ramp, (i * 8) % 256)], axis=2)
    if alpha:
        rgb = np.concatenate([rgb, np.full((height, width, 1), 128, np.uint8)], axis=2)
    return rgb


def encode(path: Path, *, codec: str, size: tuple[int, int], frames: int = 3, fps: int = 2,
           pix_fmt: str = "yuv420p", options: dict[str, str] | None = None,
           container_format: str | None = None) -> Path:
    """Frames of ``_gradient`` in any codec / pixel format / size (``make_video`` is 8-bit 4:2:0 only)."""
    alpha = pix_fmt in ("rgba", "yuva420p", "argb", "bgra")
    with av.open(str(path), mode="w", format=container_format) as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_gradient(size, i, alpha), format="rgba" if alpha else "rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def encoded(name: str, **kwargs: Any) -> Callable[[Path], Path]:
    """An item's maker that ``encode``s ``name`` into the folder it is given."""
    return lambda folder: encode(folder / name, **kwargs)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _rng(name: str) -> random.Random:
    return random.Random(name)  # seeded by the item: the same bytes on every run


def _small(folder: Path, name: str, **kwargs: object) -> Path:
    """A short, small H.264 video: 3 s at 10 fps, 64x48 (``make_video`` with its frame labels)."""
    kwargs.setdefault("frames", 30)
    kwargs.setdefault("fps", 10)
    return make_video(folder / name, **kwargs)  # type: ignore[arg-type]


# -- the items -------------------------------------------------------------------------------

def truncated(folder: Path) -> Path:
    """An MP4 with its index at the front, cut at 60%: the first part of the video decodes."""
    path = _small(folder, "truncated.mp4", size=(160, 120), gop=5, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    return _write(path, data[: int(len(data) * 0.6)])


def moov_missing(folder: Path) -> Path:
    """An MP4 recorded with its index at the end, cut before it: nothing can be found."""
    path = _small(folder, "no_moov.mp4", size=(160, 120))
    data = path.read_bytes()
    return _write(path, data[: int(len(data) * 0.6)])


def mp4_header_random_tail(folder: Path) -> Path:
    """The first 64 bytes of a real MP4 (ftyp and the start of the next box), then random bytes."""
    head = _small(folder, "head.mp4", frames=5).read_bytes()[:64]
    (folder / "head.mp4").unlink()
    return _write(folder / "random_tail.mp4", head + _rng("tail").randbytes(40_000))


def mkv_named_mp4(folder: Path) -> Path:
    path = _small(folder, "real.mkv")
    return path.rename(folder / "actually_mkv.mp4")


def mp4_named_avi(folder: Path) -> Path:
    path = _small(folder, "real.mp4")
    return path.rename(folder / "actually_mp4.avi")


def html_page(folder: Path) -> Path:
    return _write(folder / "page.mp4", b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
                  b"<body><form>" + b"<input name=x>" * 200 + b"</form></body></html>\n")


def json_document(folder: Path) -> Path:
    body = {"error": {"code": "AccessDenied", "message": "Request has expired"}, "pad": ["x" * 50] * 50}
    return _write(folder / "error.mp4", json.dumps(body).encode())


def png_still(folder: Path) -> Path:
    encode(folder / "still.png", codec="png", size=(64, 48), frames=1, pix_fmt="rgb24", container_format="image2")
    return (folder / "still.png").rename(folder / "still_png.mp4")


def zip_archive(folder: Path) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("clip.mp4", date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, b"\0" * 1_000_000)  # 1 MB of zeros: a ~1 KB zip
    return _write(folder / "clip.zip.mp4", buffer.getvalue())


def y4m_huge(folder: Path) -> Path:
    """A raw-video header claiming 65535x65535 (6 GB a frame): the header alone must be refused."""
    header = b"YUV4MPEG2 W65535 H65535 F30:1 Ip A1:1 C420jpeg\n"
    return _write(folder / "huge.y4m", header + b"FRAME\n" + bytes(65536))


def y4m_big(folder: Path) -> Path:
    """16000x16000 (384 MB a frame): under FFmpeg's own size check, over vidinfer's pixel limit."""
    header = b"YUV4MPEG2 W16000 H16000 F30:1 Ip A1:1 C420jpeg\n"
    return _write(folder / "big.y4m", header + b"FRAME\n" + bytes(65536))


def _sof_patched(data: bytes, width: int, height: int) -> bytes:
    """Every JPEG start-of-frame (FFC0) in ``data`` rewritten to claim ``width`` x ``height``."""
    out = bytearray(data)
    at = out.find(b"\xff\xc0")
    while at != -1:
        out[at + 5: at + 9] = struct.pack(">HH", height, width)
        at = out.find(b"\xff\xc0", at + 2)
    return bytes(out)


def mjpeg_big_frames(folder: Path) -> Path:
    """An MJPEG AVI whose container says 64x48 but whose JPEG frames claim 16000x16000."""
    path = encode(folder / "mjpeg_big.avi", codec="mjpeg", size=(64, 48), frames=4, pix_fmt="yuvj420p")
    return _write(path, _sof_patched(path.read_bytes(), 16000, 16000))


def mp4_huge_dims(folder: Path) -> Path:
    """An MP4 whose track and sample description (tkhd, avc1) claim 65535x65535."""
    path = _small(folder, "huge_dims.mp4", frames=10)
    data = bytearray(path.read_bytes())
    avc1 = data.find(b"avc1")
    data[avc1 + 28: avc1 + 32] = struct.pack(">HH", 65535, 65535)  # VisualSampleEntry width, height
    tkhd = data.find(b"tkhd", data.find(b"trak"))
    version = data[tkhd + 4]
    at = tkhd + 4 + (92 if version else 80)  # width, height: 16.16 fixed point at the box's end
    data[at: at + 8] = struct.pack(">II", 65535 << 16, 65535 << 16)
    return _write(path, bytes(data))


def audio_only_m4a(folder: Path) -> Path:
    return make_audio(folder / "song.m4a", seconds=0.5)


def audio_only_mp3_with_cover(folder: Path) -> Path:
    return make_audio(folder / "song.mp3", seconds=0.5, codec="mp3", cover=True)


def corrupt_packets(folder: Path) -> Path:
    """Packets 8-11 of 30 overwritten, past their first 8 bytes, with random bytes (the container is intact).

    At 1 fps, so that the tests' infer_fps of 1 wants every frame: damage confined to
    frames no sample wants may go unseen, as they are not decoded (``wanted_pts``).
    """
    rng = _rng("corrupt")

    def scramble(packet: av.Packet, i: int) -> av.Packet:
        if 8 <= i < 12 and packet.size > 8:
            memoryview(packet)[8:] = rng.randbytes(packet.size - 8)
        return packet

    return _small(folder, "corrupt.mkv", size=(160, 120), fps=1, gop=10, on_packet=scramble)


def raw_h264_no_timing(folder: Path) -> Path:
    """Annex-B H.264 with no container: no timestamps, no declared rate in the container."""
    return _small(folder, "raw.h264")


def zero_fps_avi(folder: Path) -> Path:
    """An AVI whose headers declare 0 frames per second (avih and strh rate zeroed)."""
    path = _small(folder, "zero_fps.avi")
    data = bytearray(path.read_bytes())
    avih = data.find(b"avih")
    data[avih + 8: avih + 12] = bytes(4)  # dwMicroSecPerFrame
    strh = data.find(b"strh")
    data[strh + 8 + 24: strh + 8 + 28] = bytes(4)  # dwRate (dwScale stays): 0 / scale
    return _write(path, bytes(data))


def _ebml(element_id: int, payload: bytes | int | str) -> bytes:
    """One EBML element: its id, an 8-byte size, its payload (unsigned ints big-endian, strings UTF-8)."""
    if isinstance(payload, int):
        payload = payload.to_bytes(max(1, (payload.bit_length() + 7) // 8), "big")
    elif isinstance(payload, str):
        payload = payload.encode()
    head = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    return head + b"\x01" + len(payload).to_bytes(7, "big") + payload


def _jpegs(count: int, size: tuple[int, int] = (64, 48)) -> list[bytes]:
    """``count`` JPEG pictures of ``_gradient``."""
    out = []
    with av.open(os.devnull, mode="w", format="mjpeg") as sink:
        stream = sink.add_stream("mjpeg", rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p"
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(_gradient(size, i), format="rgb24").reformat(format="yuvj420p")
            frame.pts = i
            out += [bytes(p) for p in stream.encode(frame)]
        out += [bytes(p) for p in stream.encode(None)]
    return out


def handmade_mkv(path: Path, times_ms: list[int], *, subtitles: int = 0, duration_ms: float | None = None) -> Path:
    """A Matroska file written by hand: MJPEG frames at ``times_ms``, and ``subtitles`` empty subtitle tracks.

    FFmpeg's muxers refuse more than 1000 streams and timestamps that go backwards; a
    demuxer meets both in files from elsewhere.
    """
    header = _ebml(0x1A45DFA3, b"".join([
        _ebml(0x4286, 1), _ebml(0x42F7, 1), _ebml(0x42F2, 4), _ebml(0x42F3, 8),
        _ebml(0x4282, "matroska"), _ebml(0x4287, 4), _ebml(0x4285, 2)]))
    duration = _ebml(0x4489, struct.pack(">d", duration_ms)) if duration_ms is not None else b""
    info = _ebml(0x1549A966, _ebml(0x2AD7B1, 1_000_000) + duration + _ebml(0x4D80, "corpus") + _ebml(0x5741, "corpus"))
    video = _ebml(0xAE, b"".join([
        _ebml(0xD7, 1), _ebml(0x73C5, 1), _ebml(0x83, 1), _ebml(0x86, "V_MJPEG"), _ebml(0x23E383, 100_000_000),
        _ebml(0xE0, _ebml(0xB0, 64) + _ebml(0xBA, 48))]))
    tracks = [_ebml(0xAE, _ebml(0xD7, n) + _ebml(0x73C5, n) + _ebml(0x83, 0x11) + _ebml(0x86, "S_TEXT/UTF8"))
              for n in range(2, subtitles + 2)]
    blocks = [_ebml(0xA3, b"\x81" + struct.pack(">h", t) + b"\x80" + jpeg)
              for t, jpeg in zip(times_ms, _jpegs(len(times_ms)))]
    segment = info + _ebml(0x1654AE6B, video + b"".join(tracks)) + _ebml(0x1F43B675, _ebml(0xE7, 0) + b"".join(blocks))
    return _write(path, header + _ebml(0x18538067, segment))


def many_streams(folder: Path) -> Path:
    """One MJPEG video track (10 frames) and 2000 subtitle tracks."""
    return handmade_mkv(folder / "many_streams.mkv", [i * 100 for i in range(10)], subtitles=2000)


def _patch_durations(data: bytearray, box: bytes, scale: int) -> None:
    """Multiply the duration field of every ``box`` (mvhd, tkhd or mdhd, version 0) by ``scale``."""
    at = data.find(box)
    while at != -1:
        if data[at + 4] == 0:
            offset = {b"mvhd": 16, b"tkhd": 20, b"mdhd": 16}[box]
            field = at + 4 + offset
            value = struct.unpack(">I", data[field: field + 4])[0]
            data[field: field + 4] = struct.pack(">I", min(value * scale, 0xFFFFFFFF))
        at = data.find(box, at + 4)


def absurd_duration(folder: Path) -> Path:
    """An MP4 whose headers (mvhd, tkhd, mdhd) claim 3 s x 100000 (3.5 days); its frames are all there."""
    path = _small(folder, "days.mp4", container_options={"movflags": "faststart"})
    data = bytearray(path.read_bytes())
    for box in (b"mvhd", b"tkhd", b"mdhd"):
        _patch_durations(data, box, 100_000)
    return _write(path, bytes(data))


def absurd_duration_mkv(folder: Path) -> Path:
    """MJPEG in Matroska, 10 frames (1 s), whose header declares a duration of 3.5 days."""
    return handmade_mkv(folder / "days.mkv", [i * 100 for i in range(10)], duration_ms=3.5 * 86400 * 1000)


def single_frame(folder: Path) -> Path:
    return _small(folder, "one_frame.mp4", frames=1)


def backward_pts(folder: Path) -> Path:
    """MJPEG in Matroska whose timestamps jump back 1 s after frame 15 (a bad concatenation)."""
    return handmade_mkv(folder / "backward.mkv", [i * 100 for i in range(15)] + [i * 100 for i in range(5, 20)])


def negative_pts(folder: Path) -> Path:
    """MPEG-TS whose timestamps start at -1 s (muxed with avoid_negative_ts off)."""

    def shift(packet: av.Packet, i: int) -> av.Packet:
        packet.pts -= 10
        packet.dts -= 10
        return packet

    return _small(folder, "negative.ts", on_packet=shift, container_options={"avoid_negative_ts": "disabled"})


def fine(folder: Path) -> Path:
    """A plain, healthy video: the control."""
    return _small(folder, "fine.mp4")


def zero_bytes(folder: Path) -> Path:
    return _write(folder / "empty.mp4", b"")


def random_bytes(folder: Path) -> Path:
    return _write(folder / "noise.mp4", _rng("noise").randbytes(50_000))


#: every kind, with what must come of it (see the table in tests/test_bad_inputs.py)
CORPUS: list[Item] = [
    Item("truncated", "MP4 (index at the front) cut at 60%", truncated, PARTIAL),
    Item("moov_missing", "MP4 cut before its index (the moov box)", moov_missing, failed("not_a_video")),
    Item("mp4_header_random_tail", "64 bytes of a real MP4, then random bytes", mp4_header_random_tail,
         failed("not_a_video")),
    Item("random_bytes", "50 KB of random bytes named .mp4", random_bytes, failed("not_a_video")),
    Item("zero_bytes", "an empty file", zero_bytes, failed("not_a_video", upload=400)),
    Item("mkv_named_mp4", "Matroska named .mp4", mkv_named_mp4, DONE, frames=30),
    Item("mp4_named_avi", "MP4 named .avi", mp4_named_avi, DONE, frames=30),
    Item("html", "an HTML page named .mp4", html_page, failed("not_a_video")),
    Item("json", "a JSON error document named .mp4", json_document, failed("not_a_video")),
    Item("png_still", "a PNG picture named .mp4", png_still, failed("not_a_video")),
    Item("zip", "a ZIP archive (1 MB of zeros deflated) named .mp4", zip_archive, failed("not_a_video")),
    Item("y4m_huge", "Y4M header claiming 65535x65535 (FFmpeg refuses to open it)", y4m_huge, failed("not_a_video")),
    Item("y4m_big", "Y4M header claiming 16000x16000", y4m_big, failed("frame_too_large")),
    Item("mp4_huge_dims", "MP4 whose tkhd/avc1 claim 65535x65535 (the H.264 inside is 64x48)", mp4_huge_dims,
         DONE, frames=10),
    Item("mjpeg_big_frames", "MJPEG AVI, 64x48 in its header, 16000x16000 in its JPEG frames",
         mjpeg_big_frames, failed("undecodable")),
    Item("audio_m4a", "AAC audio only (M4A)", audio_only_m4a, failed("no_video_stream")),
    Item("audio_mp3_cover", "MP3 with cover art (a one-picture 'video' stream)", audio_only_mp3_with_cover,
         failed("no_video_stream")),
    Item("corrupt_packets", "MKV with 4 of 30 packets replaced by random bytes", corrupt_packets, PARTIAL),
    Item("raw_h264", "raw Annex-B H.264: no container timing", raw_h264_no_timing, DONE, frames=30),
    Item("zero_fps", "AVI declaring 0 frames per second", zero_fps_avi, DONE, frames=30),
    Item("many_streams", "MKV with a video and 2000 subtitle tracks", many_streams, DONE, frames=10),
    Item("absurd_duration", "MP4 whose mvhd/tkhd/mdhd claim 3.5 days (its sample table: 3 s)", absurd_duration,
         DONE, frames=30),
    Item("absurd_duration_mkv", "MKV (no frame index) whose header claims 3.5 days, 1 s of frames",
         absurd_duration_mkv, PARTIAL, frames=10),
    Item("single_frame", "a one-frame MP4", single_frame, DONE, frames=1),
    Item("1x1", "FFV1 1x1 pixels", encoded("1x1.mkv", codec="ffv1", size=(1, 1), pix_fmt="yuv444p"),
         DONE, frames=3),
    Item("3x3", "H.264 4:4:4 3x3 pixels", encoded("3x3.mp4", codec="libx264", size=(3, 3), pix_fmt="yuv444p"),
         DONE, frames=3),
    Item("1921x1081", "MJPEG 4:4:4 at an odd 1921x1081",
         encoded("1921x1081.mkv", codec="mjpeg", size=(1921, 1081), frames=2, pix_fmt="yuvj444p",
                 options={"q:v": "31"}), DONE, frames=2),
    Item("10bit", "H.264 10-bit 4:2:0", encoded("10bit.mp4", codec="libx264", size=(64, 48), pix_fmt="yuv420p10le"),
         DONE, frames=3),
    Item("yuv444", "H.264 8-bit 4:4:4", encoded("yuv444.mp4", codec="libx264", size=(64, 48), pix_fmt="yuv444p"),
         DONE, frames=3),
    Item("vp9_alpha", "VP9 with alpha (yuva420p) in WebM",
         encoded("alpha.webm", codec="libvpx-vp9", size=(64, 48), pix_fmt="yuva420p",
                 options={"deadline": "realtime", "cpu-used": "8"}), DONE, frames=3),
    Item("png_rgba_mov", "PNG frames with alpha in MOV",
         encoded("rgba.mov", codec="png", size=(64, 48), pix_fmt="rgba"), DONE, frames=3),
    Item("mjpeg_avi", "MJPEG in AVI",
         encoded("camera.avi", codec="mjpeg", size=(64, 48), frames=4, pix_fmt="yuvj420p"), DONE, frames=4),
    Item("animated_gif", "an animated GIF (accepted: a GIF with frames is a video)",
         encoded("anim.gif", codec="gif", size=(64, 48), frames=4, pix_fmt="rgb8"), DONE, frames=4),
    Item("backward_pts", "MJPEG MKV whose timestamps jump back 1 s half-way", backward_pts, DONE, frames=30),
    Item("negative_pts", "MPEG-TS whose timestamps start at -1 s", negative_pts, DONE, frames=30),
    # hostile names: tame files on disk, hostile names in the upload request
    Item("name_traversal", "upload named ../../x.mp4", fine, DONE, upload_name="../../x.mp4", frames=30),
    Item("name_newline", "upload named with a newline", fine, DONE, upload_name="a\nb\r\n.mp4", frames=30),
    Item("name_rtl", "upload named with RTL override characters", fine, DONE,
         upload_name="\u202ekcatta\u202c\u05d5\u05d9\u05d3\u05d0\u05d5.mp4", frames=30),
    Item("name_255_bytes", "upload named with 255 bytes (multi-byte characters)", fine, DONE,
         upload_name="\u00e9" * 125 + "x.mp4", frames=30),
    Item("name_dots_only", "upload named '..'", fine, DONE, upload_name="..", frames=30),
]


def build(folder: Path, items: list[Item] | None = None) -> dict[str, Path]:
    """Write every item (or ``items``) into ``folder``, each in its own subfolder: kind -> path."""
    made = {}
    for item in items or CORPUS:
        sub = folder / item.kind
        sub.mkdir(parents=True, exist_ok=True)
        made[item.kind] = item.make(sub)
    return made


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    for kind, path in build(out).items():
        print(f"{kind:24} {os.path.getsize(path):>9}  {path}")

"""Real-world AVI quirks, made on the spot: one small function each, path in, path out.

- ``make_packed_avi``: DivX/Xvid *packed B-frames*. FFmpeg's ``mpeg4`` encoder writes
  one VOP per packet (I0 P2 B1 P4 B3 ...); the packed form is what VfW encoders, which
  must put out one packet per frame, wrote instead: the keyframe, a placeholder N-VOP
  (a VOP with ``vop_coded`` = 0: no picture) for the frame the encoder held back, then
  each P-VOP with the B-VOP after it concatenated in one packet, followed by an N-VOP
  where the B would have been (the reverse of FFmpeg's ``mpeg4_unpack_bframes``), and
  the DivX user data ending in ``p`` that tells the decoder so. One packet more than
  there are pictures; FFmpeg decodes every picture, in order.
- ``make_sparse_avi``: an AVI that declares 15 fps but stores pictures only at some
  frame slots (a capture that dropped or held frames): the muxer fills the gaps with
  empty chunks.
- ``make_swapped_pts_mkv``: two neighbouring frames' timestamps swapped (a badly muxed
  file), so the decoder's timestamps jump ahead and then go back.

Each frame shows its number (``videos.frame_label``).
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
from videos import make_video

__all__ = ["PACKED_FPS", "SPARSE_FPS", "make_packed_avi", "make_sparse_avi", "make_swapped_pts_mkv",
           "sparse_slots"]

PACKED_FPS = 12
SPARSE_FPS = 15
_VOP = b"\x00\x00\x01\xb6"
_USER_DATA = b"\x00\x00\x01\xb2"
#: DivX 5's user data; the trailing "p" marks a packed bitstream
_DIVX_PACKED = _USER_DATA + b"DivX503b1393p"


def _n_vop(time_increment_bits: int) -> bytes:
    """A not-coded P-VOP: type, modulo_time_base 0, marker, time increment 0, marker, vop_coded 0, stuffing."""
    bits = "01" + "0" + "1" + "0" * time_increment_bits + "1" + "0"
    bits += "0" + "1" * (-(len(bits) + 1) % 8)
    return _VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _with_divx_user_data(data: bytes) -> bytes:
    """Replace FFmpeg's own user data (``Lavc...``) after the VOL header with DivX's packed marker."""
    at = data.find(_USER_DATA)
    if at < 0:
        return data
    end = data.find(b"\x00\x00\x01", at + 4)
    return data[:at] + _DIVX_PACKED + (data[end:] if end >= 0 else b"")


def _is_b_vop(data: bytes) -> bool:
    at = data.find(_VOP)
    return at >= 0 and len(data) > at + 4 and data[at + 4] >> 6 == 2


def make_packed_avi(path: str | Path, *, frames: int = 48, size: tuple[int, int] = (64, 48)) -> Path:
    """A healthy DivX-style AVI with packed B-frames: ``frames`` pictures in ``frames + 1`` packets."""
    path = Path(path)
    plain = path.with_name(path.stem + ".unpacked.avi")
    make_video(plain, frames=frames, fps=PACKED_FPS, size=size, codec="mpeg4", bframes=1)
    try:
        with av.open(str(plain)) as src, av.open(str(path), "w") as out:
            stream = src.streams.video[0]
            packets = [(bytes(p), p.is_keyframe) for p in src.demux(stream) if p.size]
            # the encoder's time base is 1/fps, so the VOL's vop_time_increment_resolution is fps
            n_vop = _n_vop(max(1, (PACKED_FPS - 1).bit_length()))
            packed: list[tuple[bytes, bool]] = []
            i = 0
            while i < len(packets):
                data, key = packets[i]
                if i + 1 < len(packets) and _is_b_vop(packets[i + 1][0]):
                    packed += [(data + packets[i + 1][0], key), (n_vop, False)]
                    i += 2
                    continue
                packed.append((data, key))
                i += 1
                if i == 1:
                    packed.append((n_vop, False))  # the frame the encoder held back to code the first B
            target = out.add_stream_from_template(stream)
            target.codec_context.extradata = _with_divx_user_data(stream.codec_context.extradata or b"")
            for n, (data, key) in enumerate(packed):
                packet = av.Packet(_with_divx_user_data(data) if key else data)
                packet.stream = target
                packet.pts = packet.dts = n
                packet.time_base = stream.time_base
                packet.is_keyframe = key
                out.mux(packet)
    finally:
        plain.unlink(missing_ok=True)
    return path


def sparse_slots(pictures: int = 20, slots: int = 150, seed: int = 1) -> list[int]:
    """The frame slots (of the declared rate's grid) that hold a picture: 0 and a random few others."""
    return [0] + sorted(random.Random(seed).sample(range(1, slots), pictures - 1))


def make_sparse_avi(path: str | Path, *, pictures: int = 20, slots: int = 150, seed: int = 1,
                    size: tuple[int, int] = (64, 48)) -> Path:
    """An AVI declaring 15 fps whose ``pictures`` pictures sit at ``sparse_slots(...)`` of ``slots`` (10 s)."""
    at = sparse_slots(pictures, slots, seed)
    return make_video(path, frames=pictures, fps=SPARSE_FPS, size=size, codec="mpeg4",
                      pts=[Fraction(s, SPARSE_FPS) for s in at], time_base=Fraction(1, SPARSE_FPS), gop=12)


def make_swapped_pts_mkv(path: str | Path, *, frames: int = 40, swap: int = 30) -> Path:
    """Frames ``swap`` and ``swap + 1`` carry each other's timestamps (past the first 24 frames,
    so the decoder's timestamps look trustworthy at first)."""

    def doctor(packet: av.Packet, i: int) -> av.Packet:
        if i == swap:
            packet.pts = swap + 1
        elif i == swap + 1:
            packet.pts, packet.dts = swap, None
        return packet

    return make_video(path, frames=frames, fps=PACKED_FPS, bframes=0, gop=10, on_packet=doctor,
                      time_base=Fraction(1, PACKED_FPS))

"""How many pictures an MPEG-4 Part 2 (DivX, Xvid) packet holds, read from its VOP headers.

A packet is not always one picture here. DivX and Xvid in AVI *pack* B-frames: a P-VOP
and the B-VOP after it share one packet, and the next packet is an N-VOP, a few bytes
with ``vop_coded`` = 0 that codes no picture (Xvid also writes N-VOPs for dropped
frames). FFmpeg decodes every picture and none for the N-VOPs, so counting packets
would count pictures that never existed and report them lost. Only the VOP headers'
first bits are read (ISO/IEC 14496-2, 6.2.3 and 6.2.5); nothing is decoded. Where a
header cannot be read, the packet counts as one picture, as any other codec's would.
"""

from __future__ import annotations

VOP_START = b"\x00\x00\x01\xb6"
_START = b"\x00\x00\x01"
#: video_object_layer_start_code is 0x20 to 0x2F
_VOL_CODES = range(0x20, 0x30)
_EXTENDED_PAR = 15
_GRAY_SHAPE = 3


class _Bits:
    """An MSB-first bit reader over a bytes object; reading past the end raises IndexError."""

    def __init__(self, data: bytes, at: int) -> None:
        self.data = data
        self.pos = at * 8

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value


def time_increment_bits(data: bytes) -> int | None:
    """The width of ``vop_time_increment`` from the first VOL header in ``data``, or None."""
    at = data.find(_START)
    while at >= 0:
        if len(data) > at + 3 and data[at + 3] in _VOL_CODES:
            try:
                return _vol_bits(_Bits(data, at + 4))
            except IndexError:
                return None
        at = data.find(_START, at + 3)
    return None


def _vol_bits(bits: _Bits) -> int | None:
    bits.read(1)  # random_accessible_vol
    bits.read(8)  # video_object_type_indication
    ver_id = 1
    if bits.read(1):  # is_object_layer_identifier
        ver_id = bits.read(4)
        bits.read(3)  # video_object_layer_priority
    if bits.read(4) == _EXTENDED_PAR:
        bits.read(16)  # par_width, par_height
    if bits.read(1):  # vol_control_parameters
        bits.read(3)  # chroma_format, low_delay
        if bits.read(1):  # vbv_parameters
            bits.read(79)
    shape = bits.read(2)
    if shape == _GRAY_SHAPE and ver_id != 1:
        bits.read(4)  # video_object_layer_shape_extension
    if not bits.read(1):  # marker
        return None
    resolution = bits.read(16)
    return max(1, (resolution - 1).bit_length()) if resolution else None


def _vop_coded(data: bytes, at: int, increment_bits: int) -> bool:
    """Whether the VOP whose start code is at ``at`` codes a picture; True where unsure."""
    try:
        bits = _Bits(data, at + 4)
        bits.read(2)  # vop_coding_type
        while bits.read(1):  # modulo_time_base: one 1 per whole second
            pass
        if not bits.read(1):
            return True
        bits.read(increment_bits)
        if not bits.read(1):
            return True  # no marker where it should be: the width is wrong, do not guess
        return bool(bits.read(1))
    except IndexError:
        return True


class PictureCounter:
    """Counts the pictures of each packet of one MPEG-4 Part 2 stream, in decoding order."""

    def __init__(self, extradata: bytes | None) -> None:
        self.increment_bits = time_increment_bits(extradata) if extradata else None

    def pictures(self, data: bytes) -> int:
        """Coded VOPs in the packet: 0 for an N-VOP, 2 for a packed P+B; 1 when it shows no VOP header."""
        if self.increment_bits is None:
            self.increment_bits = time_increment_bits(data)  # the VOL rides in the first keyframe
        starts = []
        at = data.find(VOP_START)
        while at >= 0:
            starts.append(at)
            at = data.find(VOP_START, at + 4)
        if not starts:
            return 1
        if self.increment_bits is None:
            return len(starts)
        return sum(_vop_coded(data, at, self.increment_bits) for at in starts)

"""The display orientation of a video: its display matrix, applied as players apply it.

A phone filming upright stores its pictures landscape and writes a display matrix
(``AV_PKT_DATA_DISPLAYMATRIX`` side data: rotation, sometimes a mirror) telling the
player to turn them. Every player shows the turned picture, so vidinfer turns each
decoded frame the same way, before any model sees it, and measures sizes and boxes
in the displayed picture.

Which quarter turns and flips a matrix stands for is decided exactly as the ``ffmpeg``
command line does it (``fftools``' autorotate: ``transpose``/``hflip``/``vflip`` chosen
from the matrix's angle and signs), so vidinfer's frames are the ones ``ffmpeg -i``
would give. An angle that is not a quarter turn (which ``ffmpeg`` renders with black
corners) is taken to the nearest quarter turn.

The result is reported as ``rotation`` (degrees counterclockwise, in ffprobe's sign:
an upright phone video says -90, i.e. the picture is turned 90 degrees clockwise) and
``mirrored`` (the turned picture is then flipped left to right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["UPRIGHT", "Orientation", "from_matrix", "of_frame"]


@dataclass(frozen=True)
class Orientation:
    """Turn the stored picture ``rotation`` degrees counterclockwise, then mirror it if ``mirrored``."""

    rotation: int = 0
    mirrored: bool = False

    def __post_init__(self) -> None:
        if self.rotation not in (0, 90, 180, -90):
            raise ValueError(f"rotation must be 0, 90, 180 or -90, not {self.rotation}")

    @property
    def upright(self) -> bool:
        """Nothing to do: the stored picture is the displayed one."""
        return self.rotation == 0 and not self.mirrored

    @property
    def swaps_sides(self) -> bool:
        """A quarter turn: the displayed width is the stored height."""
        return self.rotation in (90, -90)

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        """The displayed (width, height) of a stored picture of ``width`` x ``height`` (and back)."""
        return (height, width) if self.swaps_sides else (width, height)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The displayed picture of a stored ``(H, W, ...)`` image: a contiguous copy, or ``image`` itself."""
        if self.upright:
            return image
        turned = np.rot90(image, self.rotation // 90)
        if self.mirrored:
            turned = turned[:, ::-1]
        return np.ascontiguousarray(turned)


UPRIGHT = Orientation()


def _ffmpeg_filters(matrix: Sequence[int]) -> list[str]:
    """The filters ``ffmpeg``'s autorotate inserts for ``matrix`` (fftools/ffmpeg_filter.c), turns snapped."""
    a, b, _, c, d = matrix[:5]
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return []  # a degenerate matrix: av_display_rotation_get gives NaN, nothing is applied
    theta = -round(-math.degrees(math.atan2(b / scale_y, a / scale_x)))  # -round(av_display_rotation_get)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    theta = 90 * round(theta / 90) % 360
    if theta == 90:
        return ["cclock_flip" if c > 0 else "clock"]
    if theta == 180:
        return ["hflip"] * (a < 0) + ["vflip"] * (d < 0)
    if theta == 270:
        return ["clock_flip" if c < 0 else "cclock"]
    return ["vflip"] * (d < 0)


_FILTERS = {
    "clock": lambda x: np.rot90(x, -1),
    "cclock": lambda x: np.rot90(x, 1),
    "cclock_flip": lambda x: np.swapaxes(x, 0, 1),
    "clock_flip": lambda x: np.rot90(x, 2).swapaxes(0, 1),
    "hflip": lambda x: x[:, ::-1],
    "vflip": lambda x: x[::-1],
}


def from_matrix(matrix: Sequence[int] | None) -> Orientation:
    """The orientation a 3x3 display matrix (9 int32, FFmpeg's layout) stands for; None: upright."""
    if matrix is None or len(matrix) < 9:
        return UPRIGHT
    probe = np.arange(6).reshape(2, 3)
    shown = probe
    for name in _ffmpeg_filters(matrix):
        shown = _FILTERS[name](shown)
    for candidate in (Orientation(r, m) for m in (False, True) for r in (0, 90, 180, -90)):
        turned = candidate.apply(probe)
        if turned.shape == shown.shape and (turned == shown).all():
            return candidate
    raise AssertionError(f"no orientation matches the display matrix {list(matrix)}")  # the 8 cover them all


def of_frame(frame: Any) -> Orientation:
    """The orientation a decoded ``av.VideoFrame``'s DISPLAYMATRIX side data asks for (upright if none).

    Decoders copy the stream's display matrix (MP4 ``tkhd``, Matroska projection) onto every
    frame, and add the H.264/HEVC display-orientation SEI's, so the frame is where both show.
    """
    data = frame.side_data.get("DISPLAYMATRIX")
    if data is None:
        return UPRIGHT
    raw = bytes(data)
    if len(raw) < 36:
        return UPRIGHT
    return from_matrix(np.frombuffer(raw[:36], "<i4").tolist())

"""Which frames to run models on: sampling by timestamp, exactly.

The rule (documented in the README): sample ``k`` is taken at
``t_k = start + k / infer_fps`` seconds from the first frame, for every ``t_k`` up
to the last frame's time (and below ``end`` when given), and the frame used is the
one whose display time is nearest ``t_k``, ties going to the earlier frame. All
arithmetic is on ``Fraction`` so 29.97 and 23.976 fps never drift.

``sample_frames`` is streaming: it holds one previous frame, so memory does not
grow with the video.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Generic, Protocol, TypeVar

from vidinfer.errors import InvalidInput

#: below this, sampling is "one frame every N seconds": allowed, documented.
MIN_INFER_FPS = Fraction(1, 100)


class Timed(Protocol):
    index: int
    time: Fraction


F = TypeVar("F", bound=Timed)


@dataclass(slots=True)
class Sample(Generic[F]):
    """Sample number ``k`` and the frame chosen for it."""

    k: int
    frame: F


def parse_fps(value: float | str | Fraction) -> Fraction:
    """Parse an infer_fps given as a number or ``"num/den"`` into a Fraction."""
    try:
        if isinstance(value, str) and "/" in value:
            num, den = value.split("/", 1)
            fps = Fraction(int(num), int(den))
        else:
            fps = Fraction(str(value)) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError) as exc:
        raise InvalidInput(f"infer_fps must be a number, got {value!r}", code="invalid_infer_fps") from exc
    return fps.limit_denominator(1_000_000)


#: ``skip_static``'s threshold: the mean absolute luma difference (0-255) is never above 255
MAX_SKIP_STATIC = 255.0


def check_skip_static(value: float | None) -> float | None:
    """Refuse a ``skip_static`` threshold outside 0 < t <= 255 (None: every sample is inferred)."""
    if value is None:
        return None
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"skip_static must be a number, got {str(value)[:40]!r}",
                           code="invalid_skip_static") from None
    if not 0 < threshold <= MAX_SKIP_STATIC:  # NaN fails this too
        raise InvalidInput(f"skip_static must be above 0 and at most {MAX_SKIP_STATIC:g} (a mean luma difference, "
                           f"0-255), got {threshold:g}", code="invalid_skip_static")
    return threshold


def check_infer_fps(infer_fps: Fraction, video_fps: Fraction) -> None:
    """Refuse an infer_fps that is not positive or exceeds the video's frame rate."""
    if infer_fps <= 0:
        raise InvalidInput(f"infer_fps must be greater than 0, got {float(infer_fps):g}", code="invalid_infer_fps")
    if infer_fps < MIN_INFER_FPS:
        raise InvalidInput(
            f"infer_fps must be at least {float(MIN_INFER_FPS):g} (one frame every 100 s), got {float(infer_fps):g}",
            code="invalid_infer_fps",
        )
    if infer_fps > video_fps:
        raise InvalidInput(
            f"infer_fps {float(infer_fps):g} is above the video's frame rate "
            f"{float(video_fps):.4g} ({video_fps.numerator}/{video_fps.denominator}); "
            f"use at most {float(video_fps):.4g}",
            code="infer_fps_above_video_fps",
        )


def check_range(start: float | None, end: float | None) -> tuple[Fraction, Fraction | None]:
    """Validate ``--start``/``--end`` (seconds) and return them as Fractions."""
    s = Fraction(str(start)) if start else Fraction(0)
    e = Fraction(str(end)) if end is not None else None
    if s < 0:
        raise InvalidInput(f"start must be >= 0 seconds, got {float(s):g}", code="invalid_range")
    if e is not None and e <= s:
        raise InvalidInput(f"end ({float(e):g}s) must be after start ({float(s):g}s)", code="invalid_range")
    return s, e


def check_range_in_video(start: Fraction, duration: float) -> None:
    """Refuse a range that starts at or past the video's end: it holds no frame, and an empty results file
    (or render) would pass for a video with nothing in it. A duration of 0 is unknown: nothing to check."""
    if duration > 0 and start >= Fraction(str(duration)):
        raise InvalidInput(f"start ({float(start):g}s) is at or past the end of the video ({duration:.3f}s)",
                           code="invalid_range")


def sample_time(k: int, infer_fps: Fraction, start: Fraction = Fraction(0)) -> Fraction:
    """The target time of sample ``k``."""
    return start + Fraction(k) / infer_fps


def first_sample_at_or_after(t: Fraction, infer_fps: Fraction, start: Fraction = Fraction(0)) -> int:
    """The smallest k with ``sample_time(k) >= t``: where a chunk starting at t begins."""
    if t <= start:
        return 0
    k = (t - start) * infer_fps
    return int(k) if k.denominator == 1 else int(k) + 1


def sample_frames(
    frames: Iterable[F],
    infer_fps: Fraction,
    *,
    start: Fraction = Fraction(0),
    end: Fraction | None = None,
    k_range: tuple[int, int | None] = (0, None),
) -> Iterator[Sample[F]]:
    """Pick, for each sample time, the nearest frame of a display-ordered stream.

    ``k_range`` = (first k, k to stop before) restricts which samples are emitted,
    so a chunk of a long video can be sampled with exactly the decisions a single
    pass would make: a frame's choice depends only on its neighbours' times.
    """
    k, k_stop = k_range
    target = sample_time(k, infer_fps, start)
    prev: F | None = None
    for frame in frames:
        if k_stop is not None and k >= k_stop:
            return
        if end is not None and target >= end:
            return
        while target <= frame.time:
            if prev is None or target < prev.time:
                # nothing before this frame (first frame, or a chunk started late): nearest is this one
                chosen = frame
            else:
                chosen = prev if (target - prev.time) <= (frame.time - target) else frame
            yield Sample(k, chosen)
            k += 1
            target = sample_time(k, infer_fps, start)
            if (k_stop is not None and k >= k_stop) or (end is not None and target >= end):
                return
        prev = frame
    # Past the last frame: a target between the last frame and "after" cannot be beyond
    # the last frame's time (loop condition), so nothing is left to emit.

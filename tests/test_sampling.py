"""The sampling rule, checked against an independent full decode with plain PyAV.

Sample ``k`` is at ``t_k = start + k / infer_fps`` seconds from the first frame, for
every ``t_k`` up to the last frame's time (and ``< end``); the frame used is the one
whose presentation time is nearest, ties to the earlier frame.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

import pytest
from videos import decode_reference, frame_label, reference_samples

from vidinfer.core.pipeline import decode_batches, expected_samples
from vidinfer.core.sampling import (
    check_infer_fps,
    check_range,
    first_sample_at_or_after,
    parse_fps,
    sample_frames,
    sample_time,
)
from vidinfer.core.video import DecodeReport, can_skip_frames, iter_frames, probe
from vidinfer.errors import InvalidInput


@dataclass
class T:
    """A stand-in for a decoded frame: just an index and a time."""

    index: int
    time: Fraction


def timed(times: list[Fraction]) -> list[T]:
    return [T(i, t) for i, t in enumerate(times)]


def picked(times: list[Fraction], infer_fps: Fraction, **kwargs) -> list[int]:
    return [s.frame.index for s in sample_frames(timed(times), infer_fps, **kwargs)]


# --- the rule on synthetic timelines -------------------------------------------------


def test_ties_go_to_the_earlier_frame() -> None:
    times = [Fraction(i, 30) for i in range(10)]
    # 20 fps against 30 fps: t_1 = 0.05 lies exactly between frames 1 and 2
    assert picked(times, Fraction(20)) == [0, 1, 3, 4, 6, 7, 9]
    assert picked(times, Fraction(20)) == reference_samples(times, Fraction(20))
    assert picked(times, Fraction(30), start=Fraction(1, 60)) == [0, 1, 2, 3, 4, 5, 6, 7, 8]


def test_samples_stop_at_the_last_frame_and_before_end() -> None:
    times = [Fraction(i, 10) for i in range(11)]  # 0 .. 1.0 s
    assert picked(times, Fraction(1)) == [0, 10]  # t = 1.0 is the last frame's time: included
    assert picked(times, Fraction(1), end=Fraction(1)) == [0]  # end is exclusive
    assert picked(times, Fraction(2), start=Fraction(3, 10), end=Fraction(9, 10)) == [3, 8]
    assert picked(times, Fraction(1), start=Fraction(2)) == []
    assert picked([Fraction(0)], Fraction(5)) == [0]


@pytest.mark.parametrize("seed", range(6))
def test_random_variable_frame_rate_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    times, t = [], Fraction(0)
    for _ in range(rng.randint(1, 80)):
        times.append(t)
        t += Fraction(rng.choice([1, 1, 2, 3, 7, 40]), rng.choice([30, 60, 100]))
    for infer_fps in (Fraction(1), Fraction(7), Fraction(25, 2), Fraction(1, 2), Fraction(30000, 1001)):
        for start, end in ((Fraction(0), None), (Fraction(1, 3), Fraction(17, 10)), (Fraction(9, 7), None)):
            assert picked(times, infer_fps, start=start, end=end) == reference_samples(times, infer_fps, start, end)


def test_chunks_make_the_same_choices_as_one_pass() -> None:
    rng = random.Random(7)
    times = sorted({Fraction(rng.randint(0, 3000), 1000) for _ in range(120)})
    infer_fps = Fraction(7)
    whole = picked(times, infer_fps)
    for cut in (Fraction(1, 2), Fraction(1), Fraction(13, 10), Fraction(2)):
        k_cut = first_sample_at_or_after(cut, infer_fps)
        # the second chunk starts at the frame before the cut, as a keyframe seek gives
        first = max(i for i, t in enumerate(times) if t <= cut)
        head = [s.frame.index for s in sample_frames(timed(times), infer_fps, k_range=(0, k_cut))]
        tail = [s.frame.index for s in sample_frames(timed(times)[first:], infer_fps, k_range=(k_cut, None))]
        assert head + tail == whole


def test_first_sample_at_or_after_by_brute_force() -> None:
    for infer_fps in (Fraction(1), Fraction(7), Fraction(25, 2), Fraction(1, 3), Fraction(30000, 1001)):
        for start in (Fraction(0), Fraction(1, 3), Fraction(5, 4)):
            for t in [Fraction(n, 24) for n in range(-5, 120)]:
                k = first_sample_at_or_after(t, infer_fps, start)
                assert sample_time(k, infer_fps, start) >= t
                assert k == 0 or sample_time(k - 1, infer_fps, start) < t


# --- argument checks ---------------------------------------------------------------


def test_parse_fps() -> None:
    assert parse_fps("30000/1001") == Fraction(30000, 1001)
    assert parse_fps(12.5) == Fraction(25, 2)
    assert parse_fps("0.5") == Fraction(1, 2)
    assert parse_fps(Fraction(24000, 1001)) == Fraction(24000, 1001)
    for bad in ("fast", "1/0", "", "nan", "inf"):
        with pytest.raises(InvalidInput):
            parse_fps(bad)


@pytest.mark.parametrize("infer_fps", [Fraction(0), Fraction(-1), Fraction(1, 1000), Fraction(31)])
def test_check_infer_fps_refuses(infer_fps: Fraction) -> None:
    with pytest.raises(InvalidInput):
        check_infer_fps(infer_fps, Fraction(30))


def test_check_infer_fps_accepts_the_video_rate_itself() -> None:
    check_infer_fps(Fraction(30000, 1001), Fraction(30000, 1001))
    check_infer_fps(parse_fps("29.97"), Fraction(30000, 1001))
    with pytest.raises(InvalidInput, match="above the video's frame rate"):
        check_infer_fps(parse_fps("29.98"), Fraction(30000, 1001))


def test_check_range() -> None:
    assert check_range(None, None) == (Fraction(0), None)
    assert check_range(0.5, 2) == (Fraction(1, 2), Fraction(2))
    for start, end in ((-1, None), (2, 1), (1, 1)):
        with pytest.raises(InvalidInput):
            check_range(start, end)


# --- exactness against an independent decode of real files ---------------------------

#: (file name, make_video arguments): constant rates that do not divide evenly, and VFR
VFR_PTS = [Fraction(n, 1000) for n in (0, 40, 80, 100, 300, 310, 320, 330, 700, 740, 1000, 1005, 1010,
                                         1500, 1540, 1580, 1620, 1660, 2000, 2400, 2433, 2466, 2500, 2900)]
VIDEOS = {
    "30fps.mp4": dict(frames=75, fps=Fraction(30), gop=15, bframes=2),
    "29.97fps.mp4": dict(frames=75, fps=Fraction(30000, 1001), gop=12, bframes=3),
    "23.976fps.mkv": dict(frames=60, fps=Fraction(24000, 1001), gop=10, bframes=2),
    "vfr.mp4": dict(frames=len(VFR_PTS), pts=VFR_PTS, gop=6, bframes=2),
    "vfr.mkv": dict(frames=len(VFR_PTS), pts=VFR_PTS, gop=6, bframes=2),
}
RATES = [Fraction(1), Fraction(5), Fraction(7), Fraction(25, 2), Fraction(1, 2), "own"]
RANGES = [(Fraction(0), None), (Fraction(1, 60), None), (Fraction(13, 10), None), (Fraction(2, 5), Fraction(21, 10))]


def cases(info):  # noqa: ANN001, ANN201
    """(infer_fps, start, end) for every rate in RATES the video allows and every range in RANGES."""
    for rate in RATES:
        infer_fps = info.fps if rate == "own" else rate
        if infer_fps <= info.fps:
            yield from ((infer_fps, start, end) for start, end in RANGES)


def vidinfer_picks(path, infer_fps, start, end):
    """frame_offset, time_offset and the pixel labels of what vidinfer samples."""
    info = probe(str(path))
    frames = iter_frames(info, start=float(start), threads=1)
    samples = list(sample_frames(frames, infer_fps, start=start, end=end))
    return info, ([s.frame.index for s in samples], [round(float(s.frame.time), 4) for s in samples],
                  [frame_label(s.frame.frame) for s in samples])


@pytest.mark.parametrize("name", VIDEOS)
def test_samples_match_an_independent_decode(name: str, shared_video) -> None:
    path = shared_video(name, **VIDEOS[name])
    ref = decode_reference(path)
    assert [r.label for r in ref] == list(range(len(ref))), "the encoder lost or reordered frames"
    times = [r.time for r in ref]
    info = probe(str(path))
    checked = 0
    for infer_fps, start, end in cases(info):
        want = reference_samples(times, infer_fps, start, end)
        _, (indices, time_offsets, labels) = vidinfer_picks(path, infer_fps, start, end)
        case = f"{name} infer_fps={infer_fps} start={start} end={end}"
        assert indices == want, case
        assert time_offsets == [round(float(times[i]), 4) for i in want], case
        assert labels == want, case  # the pixels really are those frames
        assert expected_samples(info, infer_fps, start, end) == len(want), case
        checked += 1
    assert checked >= 12


def test_vfr_probe_reports_the_average_rate(shared_video) -> None:
    for name in ("vfr.mp4", "vfr.mkv"):
        info = probe(str(shared_video(name, **VIDEOS[name])))
        span = VFR_PTS[-1] - VFR_PTS[0]
        assert info.fps == (len(VFR_PTS) - 1) / span, name
        assert info.frame_count == len(VFR_PTS)
        with pytest.raises(InvalidInput):
            check_infer_fps(Fraction(12), info.fps)


def test_run_video_matches_the_reference(shared_video) -> None:
    from vidinfer.core.pipeline import ModelRun, run_video
    from vidinfer.models.registry import ModelRegistry

    path = shared_video("29.97fps.mp4", **VIDEOS["29.97fps.mp4"])
    ref = decode_reference(path)
    times = [r.time for r in ref]
    info = probe(str(path))
    coco = ModelRegistry().load("coco")
    start, end, infer_fps = Fraction(1, 2), Fraction(5, 2), Fraction(2)
    result = run_video(info, [ModelRun("coco", coco)], infer_fps, start=float(start), end=float(end),
                       decode_threads=1)
    want = reference_samples(times, infer_fps, start, end)
    assert result.frame_offset == want
    assert result.time_offset == [round(float(times[i]), 4) for i in want]
    assert len(result.predictions["coco"]) == len(want) == expected_samples(info, infer_fps, start, end)
    assert not result.partial and not result.warnings


# --- frames no sample wants are not decoded, and nothing else changes ----------------

#: the same clips as HEVC, whose decoder skips non-reference pictures too
SKIP_VIDEOS = {**VIDEOS, "29.97fps-hevc.mp4": dict(frames=75, fps=Fraction(30000, 1001), codec="libx265",
                                                   options={"x265-params": "keyint=12:bframes=3:log-level=none"})}


def pipeline_picks(path, infer_fps, start, end, *, k_range=(0, None), skip_frames=True):  # noqa: ANN001, ANN201
    """What the pipeline's decode stage hands the models (frame_offset, time_offset, labels), and its report."""
    info = probe(str(path))
    report = DecodeReport()
    batches = list(decode_batches(info, [(info.width, info.height)], infer_fps, start=start, end=end,
                                  k_range=k_range, decode_threads=2, report=report, skip_frames=skip_frames))
    indices = [i for b in batches for i in b.indices]
    times = [round(float(t), 4) for b in batches for t in b.times]
    labels = [frame_label(image) for b in batches for image in b.images[(info.width, info.height)]]
    return (indices, times, labels), report


@pytest.mark.parametrize("name", SKIP_VIDEOS)
def test_skipping_frames_keeps_the_samples_of_an_independent_decode(name: str, shared_video) -> None:
    path = shared_video(name, **SKIP_VIDEOS[name])
    times = [r.time for r in decode_reference(path)]
    info = probe(str(path))
    assert can_skip_frames(info), name
    skipped = 0
    for infer_fps, start, end in cases(info):
        want = reference_samples(times, infer_fps, start, end)
        (indices, time_offsets, labels), report = pipeline_picks(path, infer_fps, start, end)
        case = f"{name} infer_fps={infer_fps} start={start} end={end}"
        assert indices == want, case
        assert time_offsets == [round(float(times[i]), 4) for i in want], case
        assert labels == want, case
        assert report.errors == 0 and not report.messages, (case, report.messages)
        if len(set(want)) == info.frame_count:  # every frame wanted: every frame decoded
            assert report.frames_skipped == 0 and report.frames_decoded == info.frame_count, case
        skipped += report.frames_skipped
    assert skipped > 0, "no frame was ever skipped: the clips have no non-reference frames to skip"


def test_chunks_skip_frames_and_make_one_pass_choices(shared_video) -> None:
    path = shared_video("29.97fps.mp4", **VIDEOS["29.97fps.mp4"])
    infer_fps = Fraction(4)
    (whole, _, whole_labels), whole_report = pipeline_picks(path, infer_fps, Fraction(0), None)
    (full, _, _), full_report = pipeline_picks(path, infer_fps, Fraction(0), None, skip_frames=False)
    assert whole == full and whole_report.frames_skipped > 0 and full_report.frames_skipped == 0
    assert whole_report.frames_decoded + whole_report.frames_skipped == full_report.frames_decoded
    pieces: list[int] = []
    for k_range in ((0, 3), (3, 7), (7, None)):
        (indices, _, labels), report = pipeline_picks(path, infer_fps, Fraction(0), None, k_range=k_range)
        assert labels == indices and report.errors == 0
        pieces += indices
    assert pieces == whole == whole_labels


def test_run_video_counts_skipped_frames_and_reports_nothing_lost(shared_video) -> None:
    from vidinfer.core.pipeline import ModelRun, run_video
    from vidinfer.models.registry import ModelRegistry

    path = shared_video("29.97fps.mp4", **VIDEOS["29.97fps.mp4"])
    info = probe(str(path))
    coco = ModelRegistry().load("coco")
    result = run_video(info, [ModelRun("coco", coco)], Fraction(2), decode_threads=1)
    assert result.stats["frames_skipped"] > 0
    assert result.stats["frames_decoded"] + result.stats["frames_skipped"] == info.frame_count
    assert not result.partial and not result.warnings


def test_avi_with_b_frames_gives_display_order_times_and_decodes_every_frame(tmp_video) -> None:  # noqa: ANN001
    """H.264 with B-frames in AVI: the container's timestamps follow decoding order."""
    path = tmp_video("b-frames.avi", frames=40, fps=Fraction(30000, 1001), size=(160, 96), gop=12, bframes=2)
    info = probe(str(path))
    assert info.pts_in_decode_order and not can_skip_frames(info)
    ref = decode_reference(path)
    assert [r.label for r in ref] == list(range(40))
    times = [Fraction(i) / info.fps for i in range(40)]  # what the frames' display times are
    for infer_fps in (Fraction(5), info.fps):
        want = reference_samples(times, infer_fps)
        (indices, time_offsets, labels), report = pipeline_picks(path, infer_fps, Fraction(0), None)
        assert indices == labels == want, infer_fps
        assert time_offsets == sorted(time_offsets)
        assert time_offsets == [round(float(times[i]), 4) for i in want], infer_fps
        assert report.frames_skipped == 0 and report.frames_decoded == 40

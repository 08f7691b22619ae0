"""The pipeline's two schedules and the fast YUV -> RGB path give the same results as the plain ones.

By default a decode thread feeds the models over a bounded queue and two batches
are in the models at once; ``overlap=False`` decodes a batch, then infers it, in
the calling thread. Both must pick the same frames and produce the same predictions
in order; both must stop on cancellation and hand decode errors to the caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videos import decode_reference, frame_label, reference_samples

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.core.pipeline import ModelRun, decode_batches, run_video
from vidinfer.core.results import Detections
from vidinfer.core.video import DecodedFrame, iter_frames, probe
from vidinfer.errors import Cancelled, ModelError
from vidinfer.models.base import fit_within


class MeanModel:
    """A stand-in detector: one box whose confidence is the image's mean brightness; records its threads."""

    def __init__(self, box: tuple[int, int] = (64, 64)) -> None:
        self.box = box
        self.info = ModelInfo("mean", "object-detection", ("thing",), box, "test")
        self.threads: set[str] = set()

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        return fit_within(source_size, self.box)

    def predict(self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams,
                ) -> list[Detections]:
        self.threads.add(threading.current_thread().name)
        w, h = source_size
        return [Detections([[0, 0, w, h]], [float(im.mean()) / 255], [0], ["thing"]) for im in images]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from videos import make_video

    return make_video(tmp_path_factory.mktemp("modes") / "v.mp4", frames=90, fps=Fraction(30000, 1001),
                      size=(160, 96), gop=25, bframes=2)


def _summary(result) -> tuple:  # noqa: ANN001
    preds = [(p.value.confidence.tolist() if p is not None else None) for p in result.predictions["m"]]
    return result.frame_offset, result.time_offset, preds


@pytest.mark.parametrize("start, end", [(None, None), (0.7, 2.2)])
def test_sequential_and_overlapped_give_the_same_result(video: Path, start: float | None, end: float | None,
                                                        ) -> None:
    info = probe(str(video))
    fps = Fraction(7)
    results = {overlap: run_video(info, [ModelRun("m", MeanModel())], fps, start=start, end=end, batch_size=3,
                                  overlap=overlap) for overlap in (False, True)}
    assert _summary(results[False]) == _summary(results[True])
    times = [r.time for r in decode_reference(video)]
    s = Fraction(str(start)) if start else Fraction(0)
    e = Fraction(str(end)) if end is not None else None
    assert results[False].frame_offset == reference_samples(times, fps, s, e)
    assert results[False].stats["overlap"] is False and results[True].stats["overlap"] is True


def test_by_default_decoding_and_two_batches_of_inference_run_in_threads_of_their_own(video: Path) -> None:
    info = probe(str(video))
    default, inline = MeanModel(), MeanModel()
    stats = run_video(info, [ModelRun("m", default)], Fraction(5)).stats
    assert stats["overlap"] is True and stats["parallel_batches"] == 2
    inline_stats = run_video(info, [ModelRun("m", inline)], Fraction(5), overlap=False).stats
    assert inline_stats["overlap"] is False and inline_stats["parallel_batches"] == 1
    assert inline.threads == {threading.current_thread().name}
    assert default.threads and all(name.startswith("vidinfer-infer") for name in default.threads)


class Meeting(MeanModel):
    """Each batch waits until another batch is in ``predict`` too: it only finishes if two run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=5)

    def predict(self, images, source_size, params):  # noqa: ANN001, ANN201
        self.barrier.wait()
        return super().predict(images, source_size, params)


def test_two_batches_are_in_the_model_at_once(video: Path) -> None:
    result = run_video(probe(str(video)), [ModelRun("m", Meeting())], Fraction(5), batch_size=2)
    assert len(result) == 15 and result.failed_frames == 0


class Slower(MeanModel):
    """The earlier the frame, the longer the batch takes: batches finish out of order."""

    def predict(self, images, source_size, params):  # noqa: ANN001, ANN201
        time.sleep(0.05 * (1 - frame_label(images[0]) / 90))
        return super().predict(images, source_size, params)


class Flaky(MeanModel):
    """Fails on every frame whose label is a multiple of 4 (as a lone frame too): those are nulled."""

    def predict(self, images, source_size, params):  # noqa: ANN001, ANN201
        if any(frame_label(im) % 4 == 0 for im in images):
            raise RuntimeError("flaky")
        return super().predict(images, source_size, params)


def test_batches_finishing_out_of_order_are_collected_in_order(video: Path) -> None:
    info = probe(str(video))
    runs = lambda: [ModelRun("m", Slower((160, 96))), ModelRun("f", Flaky((160, 96)))]  # noqa: E731
    parallel = run_video(info, runs(), Fraction(10), batch_size=2, parallel_batches=3)
    inline = run_video(info, runs(), Fraction(10), batch_size=2, overlap=False)
    assert _summary(parallel) == _summary(inline)
    assert parallel.frame_offset == sorted(parallel.frame_offset)
    nulled = [i for i, p in zip(parallel.frame_offset, parallel.predictions["f"]) if p is None]
    assert nulled and all(i % 4 == 0 for i in nulled) and parallel.failed_frames == len(nulled)
    # the flaky model's failures cost the other model nothing
    assert all(p is not None for p in parallel.predictions["m"])


class Broken(MeanModel):
    """Fails on every frame."""

    def predict(self, images, source_size, params):  # noqa: ANN001, ANN201
        raise RuntimeError("broken")


def test_a_model_failing_on_every_frame_costs_the_others_nothing(video: Path) -> None:
    info = probe(str(video))
    result = run_video(info, [ModelRun("m", MeanModel()), ModelRun("b", Broken())], Fraction(5), batch_size=4)
    assert len(result) == 15 and all(p is not None for p in result.predictions["m"])
    assert result.predictions["b"] == [None] * 15 and result.failed_frames == 15
    assert result.warnings[0].startswith("model b failed on every sampled frame")
    with pytest.raises(ModelError) as caught:  # no model gave anything: the job fails
        run_video(info, [ModelRun("b", Broken()), ModelRun("c", Broken())], Fraction(5))
    assert caught.value.code == "inference_failed"


@pytest.mark.parametrize("overlap", [False, True])
def test_cancel_stops_either_schedule(video: Path, overlap: bool) -> None:
    info = probe(str(video))
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run_video(info, [ModelRun("m", MeanModel())], Fraction(10), batch_size=2, should_cancel=cancel,
                  overlap=overlap)
    assert len(calls) == 3
    assert not any(t.name.startswith(("vidinfer-decode", "vidinfer-infer")) for t in threading.enumerate())


@pytest.mark.parametrize("overlap", [False, True])
def test_a_model_error_reaches_the_caller_in_either_schedule(video: Path, overlap: bool) -> None:
    class Broken(MeanModel):
        def predict(self, images, source_size, params):  # noqa: ANN001, ANN202
            raise KeyboardInterrupt  # not a model failure a frame can be nulled for

    with pytest.raises(KeyboardInterrupt):
        run_video(probe(str(video)), [ModelRun("m", Broken())], Fraction(5), overlap=overlap)
    assert not any(t.name.startswith(("vidinfer-decode", "vidinfer-infer")) for t in threading.enumerate())


def test_decode_batches_yields_every_sample_once_at_every_size(video: Path) -> None:
    info = probe(str(video))
    clock = [0.0]
    sizes = [(80, 48), (160, 96)]
    batches = list(decode_batches(info, sizes, Fraction(5), batch_size=4, clock=clock))
    assert [len(b) for b in batches] == [4, 4, 4, 3]
    ks = [k for b in batches for k in b.ks]
    assert ks == list(range(15))
    indices = [i for b in batches for i in b.indices]
    for b in batches:
        for w, h in sizes:
            assert all(im.shape == (h, w, 3) and im.dtype == np.uint8 for im in b.images[(w, h)])
        # the label is readable at both sizes: the right frame was converted
        assert [frame_label(im) for im in b.images[(160, 96)]] == b.indices
        assert [frame_label(im) for im in b.images[(80, 48)]] == b.indices
    assert indices == sorted(indices) and clock[0] > 0


# -- the fast conversion ------------------------------------------------------------------------------
def _first_frame(path: Path) -> DecodedFrame:
    return next(iter_frames(probe(str(path))))


@pytest.mark.parametrize("size", [(80, 48), (96, 54), (64, 64), (40, 24)])
def test_fast_downscale_matches_swscale(tmp_video, size: tuple[int, int]) -> None:  # noqa: ANN001
    frame = _first_frame(tmp_video("c.mp4", frames=2, size=(160, 96)))
    assert frame.frame.format.name == "yuv420p"
    fast = frame.to_rgb(size)
    slow = frame.frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
    assert fast.shape == slow.shape == (size[1], size[0], 3) and fast.dtype == np.uint8
    # same colour matrix (BT.601, limited range); the filters differ only at edges
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 4


def test_fast_path_keeps_colours(tmp_path: Path) -> None:
    path = tmp_path / "colour.mp4"
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (128, 128, 128)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 64, "yuv420p"
        image = np.zeros((64, 128, 3), np.uint8)
        for i, colour in enumerate(colours):
            image[:, i * 32:(i + 1) * 32] = colour
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    rgb = _first_frame(path).to_rgb((64, 32))
    for i, colour in enumerate(colours):
        patch = rgb[8:24, i * 16 + 4:(i + 1) * 16 - 4].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - colour).max() < 12, (colour, patch)


@pytest.mark.parametrize("size, pix_fmt", [((81, 49), "yuv420p"), ((320, 192), "yuv420p"), ((80, 48), "yuv444p"),
                                           ((80, 48), "yuvj420p"), ((160, 96), "yuv420p")])
def test_other_conversions_fall_back_to_swscale(tmp_path: Path, size: tuple[int, int], pix_fmt: str) -> None:
    """Odd sizes, upscaling, other pixel formats and full range take the swscale path, unchanged."""
    path = tmp_path / f"{pix_fmt}.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if pix_fmt != "yuvj420p" else "mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 96, pix_fmt
        image = np.random.default_rng(1).integers(0, 255, (96, 160, 3), dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frame = _first_frame(path)
    assert frame.frame.format.name == pix_fmt
    expected = (frame.frame.to_ndarray(format="rgb24") if size == (160, 96)
                else frame.frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray())
    np.testing.assert_array_equal(frame.to_rgb(size), expected)

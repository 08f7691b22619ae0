"""decode -> sample -> convert -> batch -> infer -> collect.

The decoder walks the video in display order, keeps only sampled frames (and does
not decode at all the non-reference frames no sample wants: ``wanted_pts``), and
converts each once per distinct size the models want, straight from YUV to the
model's input size (``DecodedFrame.to_rgb``); batches of those go to the models.
A decode thread (PyAV's codec threads, which release the GIL) feeds the models
through a small bounded queue, and ``PARALLEL_BATCHES`` batches are in the models
at once, each in a thread of its own, collected in order (``infer_batches``).
Independent runs keep every core busy without the barrier waits of one run split
across threads; on this project's 2-core machine that made the whole pipeline
4-26% faster than one two-thread run (bench/README.md). ``overlap=False`` keeps
everything in the calling thread: decode a batch, then infer it.

Either way at most ``QUEUE_DEPTH + PARALLEL_BATCHES + 3`` batches are alive at
once, so memory stays flat whatever the video's length.

``skip_static``: a sampled frame whose 64x36 luma thumbnail differs from the last
*inferred* sample's by less than the threshold (mean absolute difference, 0-255) is
not converted nor inferred; each model's entry for it repeats the last inferred
entry, marked ``reused_from`` (that sample's index). Comparing against the last
inferred frame, not the previous sample, means a slow drift still triggers inference
once it adds up. Each run (a chunk of a distributed job too) infers its first sample.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from vidinfer.core.model import PARALLEL_BATCHES, InferenceParams, Model
from vidinfer.core.results import FramePrediction, Prediction, VideoResult
from vidinfer.core.sampling import (
    check_infer_fps,
    check_range,
    check_range_in_video,
    check_skip_static,
    sample_frames,
    sample_time,
)
from vidinfer.core.video import DecodeReport, VideoInfo, can_skip_frames, iter_frames
from vidinfer.errors import Cancelled, ModelError, VidinferError

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4
#: decode threads beside the models (``decode_threads=0``): one core fewer than there are, so the
#: decoder does not take every core from ONNX Runtime. On the 2-core bench machine one thread beat
#: two by 1-10% at both model sizes (bench/README.md).
PIPELINE_DECODE_THREADS = max(1, min((os.cpu_count() or 2) - 1, 8))
#: batches in flight between the decode thread and the model thread (overlapped mode)
QUEUE_DEPTH = 2
#: ``skip_static``'s luma thumbnail (width, height): enough to see a person walk in, cheap to compare
STATIC_THUMBNAIL = (64, 36)
#: a batch holds at most this many samples in all, reused ones included, so progress and cancel checks
#: still come during a long static stretch
MAX_BATCH_SPAN = 64


@dataclass
class ModelRun:
    """One model to run on the video, the key its results go under, and its params."""

    key: str
    model: Model
    params: InferenceParams = field(default_factory=InferenceParams)


@dataclass
class Progress:
    """Reported after every batch."""

    samples_done: int
    samples_total: int
    elapsed: float

    @property
    def fraction(self) -> float:
        return min(1.0, self.samples_done / self.samples_total) if self.samples_total else 1.0


@dataclass
class Batch:
    """Sampled frames ready for the models: sample numbers, display indices and times, images."""

    ks: list[int]
    indices: list[int]
    times: list[Fraction]
    #: image size -> one RGB array per inferred sample (those whose ``reused`` is None)
    images: dict[tuple[int, int], list[np.ndarray]]
    #: per sample: None when inferred, else the index of the sample whose predictions it repeats
    reused: list[int | None] = field(default_factory=list)

    @classmethod
    def empty(cls, sizes: Sequence[tuple[int, int]]) -> Batch:
        return cls([], [], [], {s: [] for s in sizes}, [])

    def __len__(self) -> int:
        return len(self.ks)

    @property
    def inferred(self) -> int:
        return sum(r is None for r in self.reused)


@dataclass
class Inferred:
    """A batch and what each model (by key) made of it: one output per frame (None where
    inference failed on it), and the seconds the model took."""

    batch: Batch
    outputs: dict[str, list[Prediction | None]]
    seconds: dict[str, float]


_DONE = object()


def expected_samples(info: VideoInfo, infer_fps: Fraction, start: Fraction = Fraction(0),
                     end: Fraction | None = None) -> int:
    """How many samples the rule yields for this video (from probed timestamps)."""
    if info.display_pts:
        last = (info.display_pts[-1] - info.display_pts[0]) * info.time_base
    else:
        last = Fraction(info.frame_count - 1) / info.fps
    if start > last:
        return 0
    count = math.floor((last - start) * infer_fps) + 1
    if end is not None:
        below_end = math.ceil((end - start) * infer_fps)
        count = min(count, below_end)
    return max(0, count)


@dataclass(slots=True)
class _Stamp:
    """A frame known only from the probe: its display index and time."""

    index: int
    time: Fraction


def wanted_pts(info: VideoInfo, infer_fps: Fraction, *, start: Fraction = Fraction(0),
               end: Fraction | None = None, k_range: tuple[int, int | None] = (0, None)) -> frozenset[int] | None:
    """The timestamps of the frames the sampling rule will pick, worked out from the probe.

    The rule sees the same display times the decoder will give (the probed timestamps
    from the first frame's), so it picks the same frames. None where frames cannot be
    skipped (``can_skip_frames``).
    """
    if not can_skip_frames(info):
        return None
    pts, tb = info.display_pts, info.time_base
    base = pts[0]
    # frames before the one just ahead of the first target can never be picked
    first_target = base + sample_time(k_range[0], infer_fps, start) / tb
    first = max(0, bisect.bisect_left(pts, first_target) - 1)
    stamps = (_Stamp(i, (pts[i] - base) * tb) for i in range(first, len(pts)))
    return frozenset(pts[s.frame.index] for s in sample_frames(stamps, infer_fps, start=start, end=end,
                                                                 k_range=k_range))


def decode_batches(
    info: VideoInfo,
    sizes: Sequence[tuple[int, int]],
    infer_fps: Fraction,
    *,
    start: Fraction = Fraction(0),
    end: Fraction | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode_threads: int = 0,
    k_range: tuple[int, int | None] = (0, None),
    report: DecodeReport | None = None,
    clock: list[float] | None = None,
    skip_frames: bool = True,
    skip_static: float | None = None,
) -> Iterator[Batch]:
    """Decode, sample and convert: batches of the sampled frames at each of ``sizes``.

    ``k_range``, ``skip_frames`` and ``skip_static`` as in ``run_video``. ``clock[0]`` accumulates
    the seconds spent inside this generator (not while the consumer holds a batch).
    """
    clock = clock if clock is not None else [0.0]
    seek_to = float(sample_time(k_range[0], infer_fps, start))
    wanted = wanted_pts(info, infer_fps, start=start, end=end, k_range=k_range) if skip_frames else None
    frames = iter_frames(info, start=seek_to, threads=decode_threads or PIPELINE_DECODE_THREADS, report=report,
                         wanted=wanted)
    batch = Batch.empty(sizes)
    last: tuple[int, dict[tuple[int, int], np.ndarray]] | None = None
    reference: tuple[int, np.ndarray] | None = None  # skip_static: the last inferred sample and its thumbnail
    t0 = time.perf_counter()
    for sample in sample_frames(frames, infer_fps, start=start, end=end, k_range=k_range):
        decoded = sample.frame
        reused: int | None = None
        if skip_static is not None:
            thumb = decoded.luma_thumbnail(STATIC_THUMBNAIL)
            if reference is not None and float(np.abs(thumb - reference[1]).mean()) < skip_static:
                reused = reference[0]
            else:
                reference = (sample.k, thumb)
        batch.ks.append(sample.k)
        batch.indices.append(decoded.index)
        batch.times.append(decoded.time)
        batch.reused.append(reused)
        if reused is None:
            if last is None or last[0] != decoded.index:
                last = (decoded.index, {s: decoded.to_rgb(s) for s in sizes})
            for s in sizes:
                batch.images[s].append(last[1][s])
        if batch.inferred >= batch_size or len(batch) >= max(batch_size, MAX_BATCH_SPAN):
            clock[0] += time.perf_counter() - t0
            yield batch
            t0 = time.perf_counter()
            batch = Batch.empty(sizes)
    clock[0] += time.perf_counter() - t0
    if batch.ks:
        yield batch


def run_video(
    info: VideoInfo,
    runs: Sequence[ModelRun],
    infer_fps: Fraction,
    *,
    start: float | None = None,
    end: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode_threads: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    k_range: tuple[int, int | None] = (0, None),
    overlap: bool = True,
    skip_frames: bool = True,
    parallel_batches: int = PARALLEL_BATCHES,
    skip_static: float | None = None,
) -> VideoResult:
    """Run every model over the sampled frames of a video and collect the result.

    ``k_range`` = (first sample, sample to stop before) runs one chunk of the job: the
    samples it yields are exactly those a single pass yields for those indices.
    ``overlap``: decode in a thread of its own while the models run ``parallel_batches``
    batches at once (see the module's docstring); False decodes a batch, then infers
    it, in the calling thread.
    ``skip_frames``: leave undecoded the non-reference frames no sample picks (the
    results are the same; False decodes every frame, for comparison).
    ``skip_static``: the luma difference (mean absolute, 0-255, on a 64x36 thumbnail) below which a
    sample is not inferred and repeats the last inferred sample's entries (see the module's docstring).
    """
    if not runs:
        raise ModelError("no model to run", code="no_models")
    check_infer_fps(infer_fps, info.max_infer_fps)
    skip_static = check_skip_static(skip_static)
    start_f, end_f = check_range(start, end)
    check_range_in_video(start_f, info.duration)
    total = expected_samples(info, infer_fps, start_f, end_f)
    k_first, k_stop = k_range
    total = max(0, (total if k_stop is None else min(total, k_stop)) - k_first)
    source_size = (info.width, info.height)
    sizes = sorted({run.model.image_size(source_size) for run in runs})
    result = VideoResult(predictions={run.key: [] for run in runs})
    report = DecodeReport()
    decode_seconds = [0.0]
    batches = decode_batches(info, sizes, infer_fps, start=start_f, end=end_f, batch_size=batch_size,
                             decode_threads=decode_threads, k_range=k_range, report=report, clock=decode_seconds,
                             skip_frames=skip_frames, skip_static=skip_static)
    started = time.perf_counter()
    infer_seconds = {run.key: 0.0 for run in runs}
    carry = _Carry()
    with closing(_in_thread(batches) if overlap else batches) as feed, \
            closing(infer_batches(feed, runs, source_size, parallel=parallel_batches if overlap else 1)) as inferred:
        for done in inferred:
            if should_cancel is not None and should_cancel():
                raise Cancelled("the job was cancelled")
            _collect(done, runs, source_size, result, infer_seconds, carry)
            if on_progress is not None:
                on_progress(Progress(len(result.frame_offset), max(total, len(result.frame_offset)),
                                     time.perf_counter() - started))

    _check_all_failed(result, runs)
    _note_lost_frames(info, report, result, whole_video=start_f == 0 and end_f is None and k_range == (0, None))
    wall = time.perf_counter() - started
    result.stats = {
        "samples": len(result.frame_offset),
        "frames_decoded": report.frames_decoded,
        "frames_skipped": report.frames_skipped,
        "wall_seconds": round(wall, 4),
        "decode_seconds": round(decode_seconds[0], 4),
        "inference_seconds": {k: round(v, 4) for k, v in infer_seconds.items()},
        "overlap": overlap,
        "parallel_batches": parallel_batches if overlap else 1,
    }
    if skip_static is not None:
        result.stats.update(samples_inferred=len(result.frame_offset) - carry.reused, samples_reused=carry.reused)
    return result


def _in_thread(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Run ``batches`` in a decode thread, handing them over a bounded queue.

    Closing this generator (the consumer is done, failed or was cancelled) stops
    the thread: it gives up on a full queue and drops what it decoded.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()

    def produce() -> None:
        try:
            with closing(batches):
                for batch in batches:
                    if stop.is_set():
                        return
                    _put(handoff, batch, stop)
            _put(handoff, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises
            _put(handoff, exc, stop)

    thread = threading.Thread(target=produce, name="vidinfer-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Batch)
            yield item
    finally:
        stop.set()
        _drain(handoff)
        thread.join(timeout=10)


def _put(handoff: queue.Queue[object], item: object, stop: threading.Event) -> None:
    """Put into the bounded queue, giving up if the consumer has gone."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _drain(handoff: queue.Queue[object]) -> None:
    while True:
        try:
            handoff.get_nowait()
        except queue.Empty:
            return


def infer_batches(batches: Iterable[Batch], runs: Sequence[ModelRun], source_size: tuple[int, int], *,
                  parallel: int = PARALLEL_BATCHES) -> Iterator[Inferred]:
    """Run every model over each batch, ``parallel`` batches at once, yielding them in order.

    ``parallel=1`` runs them in the calling thread. At most ``parallel + 1`` batches are
    held here. Closing the generator (the consumer failed or was cancelled) drops the
    batches not started and waits for the ones running.
    """
    if parallel <= 1:
        for batch in batches:
            yield _infer(batch, runs, source_size)
        return
    pending: deque[Future[Inferred]] = deque()
    with ThreadPoolExecutor(parallel, thread_name_prefix="vidinfer-infer") as pool:
        try:
            for batch in batches:
                pending.append(pool.submit(_infer, batch, runs, source_size))
                while len(pending) > parallel or (pending and pending[0].done()):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _infer(batch: Batch, runs: Sequence[ModelRun], source_size: tuple[int, int]) -> Inferred:
    """Every model over the batch's inferred samples (none at all when each one is reused)."""
    done = Inferred(batch, {}, {})
    for run in runs:
        t0 = time.perf_counter()
        images = batch.images[run.model.image_size(source_size)]
        done.outputs[run.key] = _predict_tolerant(run, images, source_size) if images else []
        done.seconds[run.key] = time.perf_counter() - t0
    return done


@dataclass
class _Carry:
    """What ``_collect`` keeps from batch to batch for ``skip_static``: each model's last inferred
    entry (reused samples repeat it), and how many samples were reused."""

    entries: dict[str, FramePrediction | None] = field(default_factory=dict)
    reused: int = 0


def _collect(done: Inferred, runs: Sequence[ModelRun], source_size: tuple[int, int], result: VideoResult,
             infer_seconds: dict[str, float], carry: _Carry | None = None) -> None:
    """Append an inferred batch to the result. A frame that failed in one model is null in that
    model's list only: a model that fails on some frames never costs the others their results.
    A reused sample (``skip_static``) repeats its model's last inferred entry (null where that was),
    with ``reused_from`` and no inference time of its own."""
    carry = carry if carry is not None else _Carry()
    batch = done.batch
    result.frame_offset.extend(batch.indices)
    result.time_offset.extend(round(float(t), 4) for t in batch.times)
    reused = batch.reused or [None] * len(batch.ks)
    inferred = [i for i, r in enumerate(reused) if r is None]
    carry.reused += len(reused) - len(inferred)
    for run in runs:
        infer_seconds[run.key] += done.seconds[run.key]
        share = done.seconds[run.key] / max(1, len(inferred))
        outputs = iter(done.outputs[run.key])
        column = result.predictions[run.key]
        for i, source in enumerate(reused):
            if source is None:
                out = next(outputs)
                entry = None if out is None else FramePrediction(out, source_size, share)
                carry.entries[run.key] = entry
                if out is None:
                    result.warnings.append(f"model {run.key} failed on frame {batch.indices[i]} "
                                           f"(t={float(batch.times[i]):.3f}s); its entry is null")
            else:
                last = carry.entries.get(run.key)
                entry = None if last is None else FramePrediction(last.value, source_size, 0.0, reused_from=source)
            column.append(entry)
    failed = {run.key: [i for i, out in zip(inferred, done.outputs[run.key]) if out is None] for run in runs}
    result.failed_frames += len(set().union(*failed.values()))


def _predict_tolerant(run: ModelRun, images: list[np.ndarray], source_size: tuple[int, int]) -> list:
    """Predict a batch; if the batch fails, retry frame by frame and null the failures."""
    try:
        outputs = run.model.predict(images, source_size, run.params)
        if len(outputs) != len(images):
            raise ModelError(f"model {run.key} returned {len(outputs)} results for {len(images)} frames")
        return list(outputs)
    except VidinferError as exc:
        if isinstance(exc, ModelError) and exc.code != "model_error":
            raise
        if len(images) == 1:
            log.warning("model %s failed on a frame: %s", run.key, exc)
            return [None]
    except Exception as exc:  # noqa: BLE001 - a model crash on one frame must not kill the job
        if len(images) == 1:
            log.warning("model %s failed on a frame: %s", run.key, exc)
            return [None]
    return [_predict_tolerant(run, [image], source_size)[0] for image in images]


def _check_all_failed(result: VideoResult, runs: Sequence[ModelRun]) -> None:
    """Fail only when no model gave anything; a model that failed on every frame while others ran
    keeps its key, all null, with a warning first in the list."""
    if not result.frame_offset:
        return
    dead = [run.key for run in runs if all(p is None for p in result.predictions[run.key])]
    if len(dead) == len(runs):
        raise ModelError(
            f"inference failed on every one of the {result.failed_frames} sampled frames; "
            "the model does not run on this input (see the log for the first error)",
            code="inference_failed",
        )
    for key in dead:
        result.warnings.insert(0, f"model {key} failed on every sampled frame; its entries are null "
                                  "(see the worker's log for its error)")


def _note_lost_frames(info: VideoInfo, report: DecodeReport, result: VideoResult, *, whole_video: bool) -> None:
    """Mark the result partial when frames that exist in the index could not be decoded."""
    short = whole_video and report.frames_decoded + report.frames_skipped < info.frame_count
    if report.errors or short:
        result.partial = True
        last_time = result.time_offset[-1] if result.time_offset else 0.0
        lost_after = report.lost_after if report.lost_after is not None else last_time
        detail = "; ".join(dict.fromkeys(report.messages)) or "the file ends early"
        result.warnings.insert(
            0,
            f"frames were lost after t={lost_after:.3f}s: decoded {report.frames_decoded} of "
            f"{info.frame_count - report.frames_skipped} frames ({detail})",
        )

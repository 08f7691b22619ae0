"""decode -> sample -> convert -> batch -> infer -> collect.

A decode thread walks the video in display order, keeps only sampled frames,
converts each once per distinct size the models want (in the same swscale pass
as the resize), and hands batches over a small bounded queue; the calling thread
runs the models. PyAV and ONNX Runtime both release the GIL, so the two overlap,
and memory stays flat whatever the video's length.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from vidinfer.core.results import FramePrediction, VideoResult
from vidinfer.core.sampling import check_infer_fps, check_range, sample_frames, sample_time
from vidinfer.core.video import DEFAULT_DECODE_THREADS, DecodeReport, VideoInfo, iter_frames
from vidinfer.errors import Cancelled, ModelError, VidinferError
from vidinfer.models.base import InferenceParams, Model

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4
#: batches in flight between the decode thread and the model thread
QUEUE_DEPTH = 2


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
class _Batch:
    ks: list[int]
    indices: list[int]
    times: list[Fraction]
    #: image size -> one RGB array per sample
    images: dict[tuple[int, int], list[np.ndarray]]


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


def run_video(
    info: VideoInfo,
    runs: Sequence[ModelRun],
    infer_fps: Fraction,
    *,
    start: float | None = None,
    end: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode_threads: int = DEFAULT_DECODE_THREADS,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    k_range: tuple[int, int | None] = (0, None),
) -> VideoResult:
    """Run every model over the sampled frames of a video and collect the result.

    ``k_range`` = (first sample, sample to stop before) runs one chunk of the job: the
    samples it yields are exactly those a single pass yields for those indices.
    """
    if not runs:
        raise ModelError("no model to run", code="no_models")
    check_infer_fps(infer_fps, info.fps)
    start_f, end_f = check_range(start, end)
    total = expected_samples(info, infer_fps, start_f, end_f)
    k_first, k_stop = k_range
    total = max(0, (total if k_stop is None else min(total, k_stop)) - k_first)
    seek_to = float(sample_time(k_first, infer_fps, start_f))
    source_size = (info.width, info.height)
    sizes = sorted({run.model.image_size(source_size) for run in runs})
    result = VideoResult(predictions={run.key: [] for run in runs})
    report = DecodeReport()
    handoff: queue.Queue[object] = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()
    decode_seconds = [0.0]

    def decode() -> None:
        try:
            frames = iter_frames(info, start=seek_to, threads=decode_threads, report=report)
            batch = _Batch([], [], [], {s: [] for s in sizes})
            last: tuple[int, dict[tuple[int, int], np.ndarray]] | None = None
            t0 = time.perf_counter()
            for sample in sample_frames(frames, infer_fps, start=start_f, end=end_f, k_range=k_range):
                if stop.is_set():
                    return
                decoded = sample.frame
                if last is None or last[0] != decoded.index:
                    last = (decoded.index, {s: decoded.to_rgb(s) for s in sizes})
                batch.ks.append(sample.k)
                batch.indices.append(decoded.index)
                batch.times.append(decoded.time)
                for s in sizes:
                    batch.images[s].append(last[1][s])
                if len(batch.ks) >= batch_size:
                    decode_seconds[0] += time.perf_counter() - t0
                    _put(handoff, batch, stop)
                    t0 = time.perf_counter()
                    batch = _Batch([], [], [], {s: [] for s in sizes})
            decode_seconds[0] += time.perf_counter() - t0
            if batch.ks:
                _put(handoff, batch, stop)
            _put(handoff, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises
            _put(handoff, exc, stop)

    started = time.perf_counter()
    infer_seconds = {run.key: 0.0 for run in runs}
    thread = threading.Thread(target=decode, name="vidinfer-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, _Batch)
            if should_cancel is not None and should_cancel():
                raise Cancelled("the job was cancelled")
            _infer_batch(item, runs, source_size, result, infer_seconds)
            if on_progress is not None:
                on_progress(Progress(len(result.frame_offset), max(total, len(result.frame_offset)),
                                     time.perf_counter() - started))
    finally:
        stop.set()
        _drain(handoff)
        thread.join(timeout=10)

    _check_all_failed(result, runs)
    _note_lost_frames(info, report, result, whole_video=start_f == 0 and end_f is None and k_range == (0, None))
    wall = time.perf_counter() - started
    result.stats = {
        "samples": len(result.frame_offset),
        "frames_decoded": report.frames_decoded,
        "wall_seconds": round(wall, 4),
        "decode_seconds": round(decode_seconds[0], 4),
        "inference_seconds": {k: round(v, 4) for k, v in infer_seconds.items()},
    }
    return result


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


def _infer_batch(batch: _Batch, runs: Sequence[ModelRun], source_size: tuple[int, int],
                 result: VideoResult, infer_seconds: dict[str, float]) -> None:
    result.frame_offset.extend(batch.indices)
    result.time_offset.extend(round(float(t), 4) for t in batch.times)
    failed = [False] * len(batch.ks)
    for run in runs:
        images = batch.images[run.model.image_size(source_size)]
        t0 = time.perf_counter()
        outputs = _predict_tolerant(run, images, source_size)
        spent = time.perf_counter() - t0
        infer_seconds[run.key] += spent
        share = spent / max(1, len(images))
        column = result.predictions[run.key]
        for i, out in enumerate(outputs):
            if out is None:
                failed[i] = True
                column.append(None)
            else:
                column.append(FramePrediction(out, source_size, share))
    # a frame that failed in one model is null in every list (the hosted API's rule)
    n = len(batch.ks)
    for i, bad in enumerate(failed):
        if bad:
            for run in runs:
                result.predictions[run.key][-n + i] = None
            result.failed_frames += 1
            result.warnings.append(
                f"inference failed on frame {batch.indices[i]} (t={float(batch.times[i]):.3f}s); its entry is null"
            )


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
    if result.frame_offset and result.failed_frames == len(result.frame_offset):
        raise ModelError(
            f"inference failed on every one of the {result.failed_frames} sampled frames; "
            "the model does not run on this input (see the log for the first error)",
            code="inference_failed",
        )


def _note_lost_frames(info: VideoInfo, report: DecodeReport, result: VideoResult, *, whole_video: bool) -> None:
    """Mark the result partial when frames that exist in the index could not be decoded."""
    short = whole_video and report.frames_decoded < info.frame_count
    if report.errors or short:
        result.partial = True
        last_time = result.time_offset[-1] if result.time_offset else 0.0
        lost_after = report.lost_after if report.lost_after is not None else last_time
        detail = "; ".join(dict.fromkeys(report.messages)) or "the file ends early"
        result.warnings.insert(
            0,
            f"frames were lost after t={lost_after:.3f}s: decoded {report.frames_decoded} of "
            f"{info.frame_count} frames ({detail})",
        )

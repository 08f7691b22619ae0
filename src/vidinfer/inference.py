"""One inference request, end to end: resolve models, probe, run, serialise.

The local CLI and the service's workers both call ``run_inference``, so a job
gives the same results whichever way it is run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from vidinfer.core.model import InferenceParams
from vidinfer.core.pipeline import ModelRun, Progress, run_video
from vidinfer.core.results import VideoResult
from vidinfer.core.tracking import AnalysisOptions, check_analysis_tasks
from vidinfer.core.video import VideoInfo, probe
from vidinfer.errors import DecodeError, InvalidInput, Unavailable, VidinferError
from vidinfer.models.registry import ModelRegistry
from vidinfer.wire import RESERVED_KEYS, results_to_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRequest:
    """A model to run: its results key, what to load, and its inference_params."""

    key: str
    spec: str
    params: dict[str, Any] = field(default_factory=dict)


def resolve_runs(registry: ModelRegistry, requests: Sequence[ModelRequest],
                 unloadable: dict[str, str] | None = None) -> list[ModelRun]:
    """Load every requested model (cached) and validate its params before any decoding.

    With ``unloadable`` (a job the API accepted), a model that cannot load here (its file deleted
    since, its package gone) does not cost the others their results: its key goes into
    ``unloadable`` with its error code, and only when no model loads does this raise.
    """
    if not requests:
        raise InvalidInput("at least one model is needed", code="no_models")
    keys = [r.key for r in requests]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise InvalidInput(f"each model needs its own results key; repeated: {', '.join(dupes)}",
                           code="duplicate_model")
    reserved = sorted(set(keys) & set(RESERVED_KEYS))
    if reserved:
        raise InvalidInput(f"{reserved[0]!r} cannot be a model name (it is a results key)", code="invalid_model_name")
    runs, first_error = [], None
    for request in requests:
        try:
            model = registry.load(request.spec)
            runs.append(ModelRun(request.key, model, InferenceParams.parse(request.params, model.info)))
        except Unavailable:
            raise
        except VidinferError as exc:
            if unloadable is None:
                raise
            first_error = first_error or exc
            log.warning("model %s (%s) could not be loaded; its entries will be null: %s",
                        request.key, request.spec, exc.message)
            unloadable[request.key] = exc.code  # the message may name server paths: it stays in the log
    if first_error is not None and not runs:
        raise first_error  # no model at all would run: the job fails with the first reason
    return runs


def check_analysis(runs: Sequence[ModelRun], options: AnalysisOptions) -> None:
    """Refuse tracking, lines and zones when no model finds boxes: they would count nothing, silently."""
    check_analysis_tasks({run.key: run.model.info.task for run in runs}, options)


@dataclass
class InferenceOutput:
    info: VideoInfo
    result: VideoResult
    results_json: dict[str, Any]


def run_inference(
    video_path: str,
    runs: Sequence[ModelRun],
    infer_fps: Fraction,
    *,
    start: float | None = None,
    end: float | None = None,
    batch_size: int = 4,
    decode_threads: int = 0,
    on_probe: Callable[[VideoInfo], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    k_range: tuple[int, int | None] = (0, None),
    unloadable: Mapping[str, str] | None = None,
    skip_static: float | None = None,
) -> InferenceOutput:
    """Probe the video, run the models over its samples, and build the results JSON.

    ``unloadable``: model keys that could not load (``resolve_runs``) and their error codes; each
    gets a key with a null entry per sample, and a warning. ``skip_static`` as in ``run_video``.
    """
    info = probe(video_path)
    if on_probe is not None:
        on_probe(info)
    result = run_video(
        info, runs, infer_fps, start=start, end=end, batch_size=batch_size, decode_threads=decode_threads,
        on_progress=on_progress, should_cancel=should_cancel, k_range=k_range,
        skip_static=skip_static,
    )
    whole = not start and end is None and k_range == (0, None)
    if whole and result.stats.get("frames_decoded") == 0:
        # not a partial result: nothing of the video could be decoded
        detail = result.warnings[0] if result.warnings else "the decoder rejected every frame"
        raise DecodeError(f"{video_path}: not one of its {info.frame_count} frames could be decoded ({detail})",
                          code="undecodable")
    for key, code in (unloadable or {}).items():
        result.predictions[key] = [None] * len(result)
        result.warnings.insert(0, f"model {key} could not be loaded on the worker ({code}; the worker's log "
                                  "says why), so its entries are null")
    if unloadable and len(result):
        result.failed_frames = len(result)
    return InferenceOutput(info, result, results_to_json(result, info))

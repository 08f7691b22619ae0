"""Moments: the sampled frames of results that match filters, merged into time ranges.

Search answers "when did this happen", not "which frames": the samples whose predictions
pass the filters (class, minimum confidence, track id, zone, time range) are merged, when they
follow one another, into moments with a ``start``, an ``end``, the best frame and a score. With
a text query (a CLIP embedding of it), moments are ranked by their best sample's similarity to
it; without one, by their best matching detection's confidence. Pure: the CLI runs it over
results files and the API over a workspace's jobs' results::

    found = find_moments([("drive.json", results)], Filters(classes=frozenset({"car"})))
    found[0].start, found[0].end, found[0].best_frame, found[0].score
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vidinfer.errors import InvalidInput
from vidinfer.search import embedded_frames, embedding_keys
from vidinfer.wire import model_columns

#: with a text and no filter, the samples within this of a document's best similarity make its moments
TEXT_BAND = 0.05
Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Filters:
    """What a sample's predictions must show for the sample to match (empty: anything at all)."""

    classes: frozenset[str] = frozenset()
    min_confidence: float = 0.0
    track_ids: frozenset[int] = frozenset()
    #: a polygon in source pixels, or the name of a zone of the results' counts ("zone 1")
    zone: Polygon | str | None = None
    start: float | None = None
    end: float | None = None
    #: extra seconds a gap between two matching samples may last and still be one moment
    gap: float = 0.0

    @property
    def on_predictions(self) -> bool:
        """Whether any filter looks at predictions (else, with a text, similarity alone decides)."""
        return bool(self.classes or self.min_confidence > 0 or self.track_ids or self.zone is not None)


@dataclass(frozen=True)
class Moment:
    """A run of matching samples of one results document."""

    source: str  # the results file or the job
    start: float
    end: float  # the last matching sample's time plus one sampling interval, within the video
    best_frame: int
    best_time: float
    score: float
    samples: int
    classes: tuple[str, ...]
    track_ids: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"], out["track_ids"] = list(self.classes), list(self.track_ids)
        return out


def parse_zone(text: str) -> Polygon | str:
    """``x1,y1,x2,y2,x3,y3,...`` as a polygon (three points or more), else the text as a zone's name."""
    parts = text.split(",")
    if len(parts) < 2:
        return text.strip()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return text.strip()
    if len(values) < 6 or len(values) % 2 or not all(np.isfinite(values)):
        raise InvalidInput(f"a zone is three points or more, x1,y1,x2,y2,x3,y3,...: got {text[:200]!r}",
                           code="invalid_zone")
    return tuple(zip(values[::2], values[1::2]))


def inside(polygon: Polygon, x: float, y: float) -> bool:
    """Whether ``(x, y)`` lies inside ``polygon`` (even-odd rule, as a ray cast)."""
    hit = False
    n = len(polygon)
    for i in range(n):
        (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def _zone_polygons(results: Mapping[str, Any], zone: Polygon | str | None) -> dict[str, Polygon] | Polygon | None:
    """A polygon as given, or the named zone's polygon per model key from the results' counts."""
    if zone is None or not isinstance(zone, str):
        return zone
    found: dict[str, Polygon] = {}
    for key, counts in (results.get("counts") or {}).items():
        for z in (counts or {}).get("zones") or []:
            if isinstance(z, dict) and z.get("name") == zone:
                found[key] = tuple((float(x), float(y)) for x, y in z.get("points") or [])
    return found


def _matches(pred: Any, filters: Filters, polygon: Polygon | None) -> bool:
    if not isinstance(pred, dict):
        return False
    if filters.classes and pred.get("class") not in filters.classes:
        return False
    if filters.min_confidence > 0 and not (pred.get("confidence") or 0) >= filters.min_confidence:
        return False
    if filters.track_ids and pred.get("tracker_id") not in filters.track_ids:
        return False
    if filters.zone is not None:
        x, y = pred.get("x"), pred.get("y")
        if polygon is None or x is None or y is None or not inside(polygon, float(x), float(y)):
            return False
    return True


@dataclass
class _Sample:
    index: int
    score: float
    classes: set[str]
    track_ids: set[int]


def matching_samples(results: Mapping[str, Any], filters: Filters) -> dict[int, _Sample]:
    """The samples (by index) whose predictions pass the filters, with their best confidence."""
    times = results.get("time_offset") or []
    zones = _zone_polygons(results, filters.zone)
    out: dict[int, _Sample] = {}
    for key in model_columns(results):
        polygon = zones.get(key) if isinstance(zones, dict) else zones
        if filters.zone is not None and polygon is None:
            continue  # a named zone this model was not counted in
        for i, entry in enumerate(results[key]):
            if not isinstance(entry, dict) or i >= len(times) or not _in_range(float(times[i]), filters):
                continue
            for pred in entry.get("predictions") or []:
                if not _matches(pred, filters, polygon):
                    continue
                s = out.setdefault(i, _Sample(i, 0.0, set(), set()))
                s.score = max(s.score, float(pred.get("confidence") or 0.0))
                if isinstance(pred.get("class"), str):
                    s.classes.add(pred["class"])
                if isinstance(pred.get("tracker_id"), int):
                    s.track_ids.add(pred["tracker_id"])
    return out


def _in_range(time: float, filters: Filters) -> bool:
    return (filters.start is None or time >= filters.start) and (filters.end is None or time < filters.end)


def sample_interval(results: Mapping[str, Any]) -> float:
    """The time between two samples: the median step of ``time_offset`` (0 for a single sample)."""
    times = np.asarray(results.get("time_offset") or [], dtype=np.float64)
    return float(np.median(np.diff(times))) if len(times) > 1 else 0.0


def similarities(query: np.ndarray, results: Mapping[str, Any]) -> dict[int, float]:
    """Each sample's best cosine similarity with ``query`` over the CLIP embeddings of ``results``."""
    index = {int(f): i for i, f in enumerate(results.get("frame_offset") or [])}
    out: dict[int, float] = {}
    for key in embedding_keys(results):
        for frame, _, vectors in embedded_frames(results, key):
            if vectors.ndim != 2 or vectors.shape[1] != len(query):
                raise InvalidInput(
                    f"the {key!r} embeddings have {vectors.shape[-1]} dimensions but the query has {len(query)}: "
                    "search with the CLIP model that made them", code="embedding_mismatch")
            norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
            i = index[frame]
            out[i] = max(out.get(i, -1.0), float(np.max(vectors @ query / norms)))
    return out


def merge(results: Mapping[str, Any], source: str, samples: Mapping[int, _Sample], gap: float = 0.0) -> list[Moment]:
    """Samples merged into moments: consecutive ones, or ones at most one interval (+ ``gap``) apart."""
    frames, times = results.get("frame_offset") or [], results.get("time_offset") or []
    interval = sample_interval(results)
    duration = (results.get("video") or {}).get("duration") if isinstance(results.get("video"), dict) else None
    runs: list[list[_Sample]] = []
    for i in sorted(samples):
        prev = runs[-1][-1] if runs else None
        if prev is not None and (i == prev.index + 1 or
                                 float(times[i]) - float(times[prev.index]) <= interval + gap + 1e-6):
            runs[-1].append(samples[i])
        else:
            runs.append([samples[i]])
    moments = []
    for run in runs:
        best = max(run, key=lambda s: s.score)  # the first of equals
        end = float(times[run[-1].index]) + interval
        if isinstance(duration, (int, float)) and duration > 0:
            end = min(end, float(duration))
        start = float(times[run[0].index])
        moments.append(Moment(source, round(start, 6), round(max(end, start), 6), int(frames[best.index]),
                              float(times[best.index]), round(best.score, 6), len(run),
                              tuple(sorted(set().union(*(s.classes for s in run)))),
                              tuple(sorted(set().union(*(s.track_ids for s in run))))))
    return moments


def find_moments(documents: Iterable[tuple[str, Mapping[str, Any]]], filters: Filters, *,
                 query: np.ndarray | None = None, limit: int = 10) -> list[Moment]:
    """The best ``limit`` moments over ``(source, results JSON)`` documents, best first.

    Without ``query``, a sample matches when one of its predictions passes the filters (any prediction,
    with no filter), and a moment scores its best confidence. With ``query`` (a CLIP text embedding), a
    moment scores its best sample's similarity; with no prediction filter, the samples of a document
    within ``TEXT_BAND`` of its best similarity make its moments. Ties keep document, then time order.
    """
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}")
    if query is not None:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
    found: list[Moment] = []
    embedded = 0
    for source, results in documents:
        if query is None:
            found += merge(results, source, matching_samples(results, filters), filters.gap)
            continue
        sims = similarities(query, results)
        if not sims:
            continue
        embedded += 1
        times = results.get("time_offset") or []
        if filters.on_predictions:
            samples = {i: s for i, s in matching_samples(results, filters).items() if i in sims}
        else:
            in_range = {i: s for i, s in sims.items() if i < len(times) and _in_range(float(times[i]), filters)}
            top = max(in_range.values(), default=None)
            samples = {} if top is None else {
                i: _Sample(i, 0.0, set(), set()) for i, s in in_range.items() if s >= top - TEXT_BAND}
        for s in samples.values():
            s.score = sims[s.index]
        found += merge(results, source, samples, filters.gap)
    if query is not None and not embedded:
        raise InvalidInput("no CLIP embeddings to search: run the videos with a CLIP model first "
                           "(vidinfer infer VIDEO --model clip)", code="no_embeddings")
    found.sort(key=lambda m: -m.score)
    return found[:limit]


def check_filters(classes: Sequence[str] = (), min_confidence: float = 0.0, track_ids: Sequence[int] = (),
                  zone: str | None = None, start: float | None = None, end: float | None = None,
                  gap: float = 0.0) -> Filters:
    """Filters from a client's values, checked (a bad one is ``InvalidInput``, never a crash)."""
    if not 0 <= min_confidence <= 1:
        raise InvalidInput(f"min_confidence must be between 0 and 1, got {min_confidence}", code="invalid_filter")
    for name, value in (("start", start), ("end", end), ("gap", gap)):
        if value is not None and (not np.isfinite(value) or value < 0):
            raise InvalidInput(f"{name} must be a number of seconds, 0 or more", code="invalid_filter")
    if start is not None and end is not None and end <= start:
        raise InvalidInput(f"end ({end}) must be after start ({start})", code="invalid_filter")
    return Filters(frozenset(classes), float(min_confidence), frozenset(int(t) for t in track_ids),
                   parse_zone(zone) if zone else None, start, end, float(gap))

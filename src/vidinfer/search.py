"""Search sampled frames by text: rank the CLIP embeddings in results files against a query.

A results file from a run with a CLIP model (``--model clip``) holds one
L2-normalised image embedding per sampled frame. ``rank`` scores every such
frame by cosine similarity with a query vector (a text embedding from the same
CLIP model) and returns the best; it is pure (numpy only), so the CLI ranks
results files and a server can rank its jobs' results the same way::

    hits = search_text(registry.load("clip"), "a person on a bicycle",
                       [("drive.results.json", json.load(f))], top_k=5)
    hits[0].frame_offset, hits[0].time_offset, hits[0].score
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vidinfer.errors import InvalidInput
from vidinfer.wire import RESERVED_KEYS


@dataclass(frozen=True)
class Hit:
    """One sampled frame and how well it matches the query."""

    source: str  # the results file, or the job, it came from
    key: str  # the model key whose embeddings matched
    frame_offset: int
    time_offset: float
    score: float  # cosine similarity, -1..1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TextEmbedder(Protocol):
    """What search needs of a model: L2-normalised text embeddings (``ClipModel`` has it)."""

    def embed_text(self, texts: list[str]) -> np.ndarray: ...


def embedding_keys(results: Mapping[str, Any]) -> list[str]:
    """The model keys of a results JSON whose entries carry ``embeddings``."""
    keys = []
    for key, column in results.items():
        if key in RESERVED_KEYS or not isinstance(column, list):
            continue
        if any(isinstance(entry, dict) and "embeddings" in entry for entry in column):
            keys.append(key)
    return keys


def embedded_frames(results: Mapping[str, Any], key: str) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame_offset, time_offset, vectors [n, D])`` of each frame of ``key`` that has embeddings."""
    frames, times = results.get("frame_offset") or [], results.get("time_offset") or []
    for i, entry in enumerate(results.get(key) or []):
        if not isinstance(entry, dict) or not entry.get("embeddings") or i >= len(frames):
            continue
        yield int(frames[i]), float(times[i]) if i < len(times) else 0.0, np.asarray(entry["embeddings"], np.float32)


def rank(
    query: np.ndarray,
    documents: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    key: str | None = None,
    top_k: int = 10,
    min_score: float = -1.0,
) -> list[Hit]:
    """The ``top_k`` frames most similar to ``query`` over ``(source, results JSON)`` documents.

    Every model key with embeddings is searched unless ``key`` names one. A
    frame with several embeddings scores its best. Ties keep document order,
    then frame order. Embeddings of another size than the query (another
    CLIP model made them) are refused with the sizes in the message.
    """
    if top_k < 1:
        raise InvalidInput(f"top_k must be at least 1, got {top_k}")
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    hits: list[Hit] = []
    searched = 0
    for source, results in documents:
        keys = [key] if key else embedding_keys(results)
        for k in keys:
            for frame, time, vectors in embedded_frames(results, k):
                if vectors.ndim != 2 or vectors.shape[1] != len(query):
                    raise InvalidInput(
                        f"{source}: the {k!r} embeddings have {vectors.shape[-1]} dimensions but the query has "
                        f"{len(query)}: search with the CLIP model that made them", code="embedding_mismatch")
                norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
                score = float(np.max(vectors @ query / norms))
                searched += 1
                if score >= min_score:
                    hits.append(Hit(source, k, frame, time, round(score, 6)))
    if not searched:
        raise InvalidInput("no CLIP embeddings to search: run the videos with a CLIP model first "
                           "(vidinfer infer VIDEO --model clip)", code="no_embeddings")
    hits.sort(key=lambda h: -h.score)  # stable: ties keep document, then frame order
    return hits[:top_k]


def search_text(model: TextEmbedder, text: str, documents: Iterable[tuple[str, Mapping[str, Any]]],
                **options: Any) -> list[Hit]:
    """Rank frames by how well they match ``text``, with the CLIP model that embedded them."""
    if not text.strip():
        raise InvalidInput("the search text is empty")
    (query,) = model.embed_text([text])
    return rank(query, documents, **options)


def load_results(path: Path) -> dict[str, Any]:
    """A results JSON file, or a clear error naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not a readable results file: {exc}", code="invalid_results") from exc
    if not isinstance(data, dict) or not isinstance(data.get("frame_offset"), list):
        raise InvalidInput(f"{path} is not a vidinfer results file (no frame_offset list)", code="invalid_results")
    return data

"""Splitting a job into chunks of samples, and merging the chunks' results back.

A chunk is a range of sample indices ``[k_first, k_stop)``; its worker seeks to the
first sample's time and keeps exactly the samples a single pass would choose for
those indices (``sampling.sample_frames`` with ``k_range``). Concatenating the
chunks' lists in order therefore gives the single-pass results, value for value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class Chunk:
    index: int
    k_first: int
    k_stop: int

    @property
    def samples(self) -> int:
        return self.k_stop - self.k_first


def plan_chunks(total_samples: int, infer_fps: Fraction, chunk_seconds: float) -> list[Chunk]:
    """Chunks of about ``chunk_seconds`` of video each; a short video is one chunk."""
    per_chunk = max(1, math.floor(Fraction(str(chunk_seconds)) * infer_fps))
    if total_samples <= 0:
        return [Chunk(0, 0, 0)]
    return [Chunk(i, k, min(k + per_chunk, total_samples))
            for i, k in enumerate(range(0, total_samples, per_chunk))]


def merge_results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate chunk results files (in chunk order) into one results file."""
    if not parts:
        raise ValueError("no chunk results to merge")
    keys = list(parts[0])
    merged: dict[str, Any] = {key: [] for key in keys}
    for part in parts:
        if list(part) != keys:
            raise ValueError(f"chunk results disagree on their keys: {list(part)} vs {keys}")
        for key in keys:
            if isinstance(part[key], list):
                merged[key].extend(part[key])
            else:  # an object about the whole video (``video``): every chunk has the same
                merged[key] = part[key]
    return merged

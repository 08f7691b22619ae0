"""Helpers the model adapters share; the contract they implement is ``vidinfer.core.model``."""

from __future__ import annotations


def fit_within(source_size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """Scale ``source_size`` to fit inside ``box`` keeping the aspect ratio (letterbox size)."""
    sw, sh = source_size
    bw, bh = box
    scale = min(bw / sw, bh / sh)
    return max(1, round(sw * scale)), max(1, round(sh * scale))

"""Region queries: a query is also searched as overlapping windows, and each reference keeps its best score.

A copy pasted small into another picture (an inset), or one tile of a collage, fills only part of the
query, so the whole query's descriptor is dominated by the other picture. Searching windows of the
query finds it. The windows are fixed, not learnt: the whole image, then a 3 x 3 grid of windows half
the query's width and height with a stride of a quarter (they cover every region of at least half the
query's size), then the centre 60 %. That is eleven searches per query; the cost is reported as such.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

WINDOW = 0.5  # of the query's width and height
STRIDE = 0.25
CENTRE = 0.6


def windows(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (left, top, right, bottom): the whole image first, then the grid, then the centre."""
    boxes = [(0, 0, width, height)]
    steps = np.arange(0.0, 1.0 - WINDOW + 1e-9, STRIDE)
    for top in steps:
        for left in steps:
            boxes.append(_box(left, top, WINDOW, width, height))
    boxes.append(_box((1 - CENTRE) / 2, (1 - CENTRE) / 2, CENTRE, width, height))
    return boxes


def _box(left: float, top: float, size: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = round(left * width), round(top * height)
    return x0, y0, max(x0 + 1, round((left + size) * width)), max(y0 + 1, round((top + size) * height))


def crops(image: Image.Image) -> list[Image.Image]:
    """The query's windows as images, in the order of ``windows``."""
    return [image.crop(box) for box in windows(*image.size)]


def best_per_reference(ids: Sequence[np.ndarray], scores: Sequence[np.ndarray], k: int) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """Merge the hits of one query's windows: each reference keeps its best similarity; top ``k``, best first.

    ``ids[w]``/``scores[w]`` are window ``w``'s neighbours (similarities, higher is better; id -1 is
    padding). Ties keep the lower id first, so the merge is deterministic.
    """
    best: dict[int, float] = {}
    for window_ids, window_scores in zip(ids, scores):
        for ref, score in zip(window_ids.tolist(), window_scores.tolist()):
            if ref >= 0 and score > best.get(ref, -np.inf):
                best[ref] = score
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
    out_ids = np.full(k, -1, dtype=np.int64)
    out_scores = np.full(k, -np.inf, dtype=np.float64)
    for rank, (ref, score) in enumerate(ranked):
        out_ids[rank], out_scores[rank] = ref, score
    return out_ids, out_scores

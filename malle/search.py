"""Stage 4: exact FAISS indexes and top-K search with deterministic ties.

Each metric (``malle.metrics``) builds its own exact index: float embeddings go
into ``IndexFlatIP``, packed hashes into ``IndexBinaryFlat``.

Ties: perceptual hashes often put several originals at the same distance. FAISS
does not promise an order among equal scores, so every result row is re-sorted
by (score, database id), best score first and the lower id first among equals.
Database ids are the originals' row order, sorted by file name, which is
independent of which original is the true match. When a tie straddles the K-th
place, the search is widened until the tie group is complete, so the cut is exact.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import set_file_mode
from .metrics import Metric


def save_index(index, path: Path, metric: Metric) -> None:
    """The metric's FAISS writer into a temp file, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        metric.write_index(index, Path(tmp))
        set_file_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Hits:
    """Top-K per query: database ids and native scores, best first."""

    ids: np.ndarray  # (n_queries, k) int64
    scores: np.ndarray  # (n_queries, k) float32 similarity or int32 distance
    metric: Metric

    @property
    def top1_tied(self) -> np.ndarray:
        """True where the best score is shared by another database item."""
        if self.scores.shape[1] < 2:
            return np.zeros(len(self.scores), dtype=bool)
        return self.scores[:, 0] == self.scores[:, 1]


def _order(ids: np.ndarray, scores: np.ndarray, metric: Metric) -> np.ndarray:
    """Row-wise positions sorting by best score, then by lower id (FAISS pads with id -1)."""
    ids_for_sort = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    return np.lexsort((ids_for_sort, metric.sort_key(scores)), axis=-1)


def search(index, queries: np.ndarray, k: int, metric: Metric) -> Hits:
    """Exact top-``k`` for every query, ties broken by database id."""
    n_total = index.ntotal
    k = min(k, n_total)
    if len(queries) == 0 or k == 0:
        empty = np.zeros((len(queries), k))
        return Hits(empty.astype(np.int64), empty.astype(metric.score_dtype), metric)
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=metric.score_dtype)
    pending = np.arange(len(queries))
    width = min(n_total, k + 8)
    while len(pending):
        s, i = index.search(np.ascontiguousarray(queries[pending]), width)
        order = _order(i, s, metric)
        s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
        # The cut is exact when the K-th score differs from the last one fetched.
        settled = (width == n_total) | (s[:, k - 1] != s[:, -1])
        ids[pending[settled]] = i[settled, :k]
        scores[pending[settled]] = s[settled, :k]
        pending = pending[~settled]
        width = min(n_total, width * 2)
    return Hits(ids, scores, metric)

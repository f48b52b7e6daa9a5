"""Top-K search over FAISS indexes, with deterministic ties where the index is exact (used by the ``search``,
``openset``, ``attribution`` and ``sweepscore`` stages, ``malle.lab.stages``).

Each metric (``malle.retrieval.metrics``) builds its own exact index: float embeddings go
into ``IndexFlatIP``, packed hashes into ``IndexBinaryFlat``. Approximate indexes
(``malle.retrieval.indexes``: HNSW, IVF, PQ) are searched once at K; their rows are sorted
the same way, but a tie at the K-th place is not completed, since the index
may not have visited every tied item anyway.

Ties: perceptual hashes often put several originals at the same distance. FAISS
does not promise an order among equal scores, so every result row is re-sorted
by (score, database id), best score first and the lower id first among equals.
Database ids are the originals' row order, sorted by file name, then any extra
references in their stage's order, which is independent of which original is the
true match. When a tie straddles the K-th place, the search is widened until the
tie group is complete, so the cut is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from malle.io.cache import write_atomic
from malle.retrieval.metrics import Metric


def save_index(index, path: Path, metric: Metric) -> None:
    """The metric's FAISS writer, atomically."""
    write_atomic(path, lambda tmp: metric.write_index(index, Path(tmp)))


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


def is_exact(index) -> bool:
    return isinstance(index, (faiss.IndexFlat, faiss.IndexBinaryFlat))


def search(index, queries: np.ndarray, k: int, metric: Metric) -> Hits:
    """Top-``k`` for every query, ties broken by database id; exact (ties completed) on a flat index.

    ``queries`` is (n, width), or (n, variants, width) for methods that match a query
    by its best variant (PDQ's 8 orientations): each variant is searched exactly and
    every database item keeps its best score over the variants.
    """
    if queries.ndim == 3:
        return _best_of_variants([search(index, queries[:, v], k, metric) for v in range(queries.shape[1])], k)
    n_total = index.ntotal
    k = min(k, n_total)
    if len(queries) == 0 or k == 0:
        empty = np.zeros((len(queries), k))
        return Hits(empty.astype(np.int64), empty.astype(metric.score_dtype), metric)
    if not is_exact(index):
        s, i = index.search(np.ascontiguousarray(queries), k)
        order = _order(i, s, metric)
        return Hits(np.take_along_axis(i, order, 1), np.take_along_axis(s, order, 1).astype(metric.score_dtype),
                    metric)
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores: np.ndarray = np.empty((len(queries), k), dtype=metric.score_dtype)
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


def _best_of_variants(per_variant: list[Hits], k: int) -> Hits:
    """Merge per-variant top-k lists: best score per database id, then (score, id) order.

    Exact: an item in the merged top-k is in the top-k of the variant where it scores
    best, and every variant's list holds its complete tie group at the k-th place.
    """
    metric = per_variant[0].metric
    ids = np.concatenate([h.ids for h in per_variant], axis=1)
    scores = np.concatenate([h.scores for h in per_variant], axis=1)
    order = _order(ids, scores, metric)  # best first, so the first time an id appears is its best score
    ids, scores = np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)
    out_ids = np.full((len(ids), min(k, ids.shape[1])), -1, dtype=np.int64)
    out_scores: np.ndarray = np.zeros(out_ids.shape, dtype=metric.score_dtype)
    for row in range(len(ids)):
        _, first = np.unique(ids[row], return_index=True)
        keep = np.sort(first)[: out_ids.shape[1]]
        out_ids[row, : len(keep)], out_scores[row, : len(keep)] = ids[row, keep], scores[row, keep]
    return Hits(out_ids, out_scores, metric)


def best_pair_scores(metric: Metric, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Score of each query against one database row, the best variant's for multi-variant queries."""
    if queries.ndim == 2:
        return metric.pair_scores(queries, rows)
    per_variant = np.stack([metric.pair_scores(queries[:, v], rows) for v in range(queries.shape[1])], axis=1)
    best = np.argmin(metric.sort_key(per_variant), axis=1)
    return np.take_along_axis(per_variant, best[:, None], 1)[:, 0]

"""Stage 4: exact FAISS indexes and top-K search with deterministic ties.

Float embeddings go into ``IndexFlatIP`` (cosine similarity on L2-normalised
vectors); packed hashes into ``IndexBinaryFlat`` (exact Hamming distance).

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

import faiss
import numpy as np

METRICS = ("ip", "hamming")


def build_index(codes: np.ndarray, metric: str) -> faiss.Index | faiss.IndexBinary:
    if metric == "ip":
        index = faiss.IndexFlatIP(codes.shape[1])
        index.add(np.ascontiguousarray(codes, dtype=np.float32))
    elif metric == "hamming":
        index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        index.add(np.ascontiguousarray(codes, dtype=np.uint8))
    else:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    return index


def save_index(index, path: Path) -> None:
    """``faiss.write_index`` into a temp file, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        writer = faiss.write_index_binary if isinstance(index, faiss.IndexBinary) else faiss.write_index
        writer(index, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_index(path: Path, metric: str):
    return faiss.read_index_binary(str(path)) if metric == "hamming" else faiss.read_index(str(path))


@dataclass
class Hits:
    """Top-K per query: database ids and native scores, best first."""

    ids: np.ndarray  # (n_queries, k) int64
    scores: np.ndarray  # (n_queries, k) float32 similarity or int32 distance
    metric: str

    @property
    def top1_tied(self) -> np.ndarray:
        """True where the best score is shared by another database item."""
        if self.scores.shape[1] < 2:
            return np.zeros(len(self.scores), dtype=bool)
        return self.scores[:, 0] == self.scores[:, 1]


def _order(ids: np.ndarray, scores: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise positions sorting by best score, then by lower id (FAISS pads with id -1)."""
    key = -scores.astype(np.float64) if metric == "ip" else scores.astype(np.float64)
    ids_for_sort = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    return np.lexsort((ids_for_sort, key), axis=-1)


def search(index, queries: np.ndarray, k: int, metric: str) -> Hits:
    """Exact top-``k`` for every query, ties broken by database id."""
    n_total = index.ntotal
    k = min(k, n_total)
    if len(queries) == 0 or k == 0:
        empty = np.zeros((len(queries), k))
        return Hits(empty.astype(np.int64), empty.astype(np.float32), metric)
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32 if metric == "ip" else np.int32)
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


def pair_scores(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise score between ``a[i]`` and ``b[i]`` in the metric's native unit."""
    if metric == "ip":
        return np.einsum("ij,ij->i", a.astype(np.float32), b.astype(np.float32))
    return np.unpackbits(np.bitwise_xor(a, b), axis=1).sum(axis=1).astype(np.int32)

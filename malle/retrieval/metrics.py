"""How codes are compared: one object per metric instead of strings switched on.

``IP`` scores L2-normalised float32 rows by inner product (cosine similarity,
higher is better); ``HAMMING`` scores bits packed with ``np.packbits`` by Hamming
distance (lower is better). Each metric knows its codes' dtype and width, how its
exact FAISS index is built, written and read, how to sort its scores best first,
and how to score pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np

from malle.errors import ConfigError

# Scoring an (a x b) Hamming matrix in row blocks keeps the xor temporary small.
_HAMMING_ROWS_PER_BLOCK = 1024


class Metric(ABC):
    name: ClassVar[str]  # stored in cache metadata and costs.csv
    score_name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    dtype: ClassVar[type]  # of one code row
    score_dtype: ClassVar[type]  # of the scores FAISS returns
    binary: ClassVar[bool]  # packed bits (FAISS's binary indexes) rather than floats

    @abstractmethod
    def code_width(self, dim: int) -> int:
        """Columns of one code row for a ``dim``-dimensional (or ``dim``-bit) descriptor."""

    @abstractmethod
    def build_index(self, codes: np.ndarray) -> faiss.Index | faiss.IndexBinary:
        """An exact FAISS index holding ``codes`` in row order (row i has id i)."""

    @abstractmethod
    def factory(self, spec: str) -> str:
        """An index-factory string in its float form (see ``malle.retrieval.indexes``) in the grammar of this metric's
        FAISS indexes; a ConfigError where it has no such form."""

    @abstractmethod
    def new_index(self, dim: int, factory: str):
        """An empty index from a FAISS index-factory string in its float form (see ``malle.retrieval.indexes``)."""

    @abstractmethod
    def set_search_params(self, index, params: str) -> None:
        """``key=value,...`` search parameters (efSearch, nprobe) onto ``index``."""

    @abstractmethod
    def write_index(self, index, path: Path) -> None:
        """FAISS's own writer for this kind of index."""

    @abstractmethod
    def read_index(self, path: Path):
        """FAISS's own reader; raises RuntimeError on a damaged file."""

    @abstractmethod
    def compare(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(len(a), len(b)) scores in the native unit."""

    @abstractmethod
    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise scores between ``a[i]`` and ``b[i]``."""

    def sort_key(self, scores: np.ndarray) -> np.ndarray:
        """float64 keys that sort ascending from best to worst."""
        keys = scores.astype(np.float64)
        return -keys if self.higher_is_better else keys

    def similarity(self, scores: np.ndarray) -> np.ndarray:
        """Scores turned into 'higher is more similar' (negated distance for Hamming)."""
        return -self.sort_key(scores)

    def from_similarity(self, similarity: float) -> float:
        """The inverse of ``similarity``: back to the native unit (a distance for Hamming)."""
        return float(similarity) if self.higher_is_better else 0.0 - float(similarity)

    def empty_codes(self, dim: int) -> np.ndarray:
        return np.zeros((0, self.code_width(dim)), dtype=self.dtype)

    def format_score(self, score: float, dim: int) -> str:
        return f"{score:.4f}"

    def __repr__(self) -> str:
        return f"<metric {self.name}>"


class InnerProduct(Metric):
    name = "ip"
    score_name = "cosine similarity"
    higher_is_better = True
    dtype = np.float32
    score_dtype = np.float32
    binary = False

    def code_width(self, dim: int) -> int:
        return dim

    def build_index(self, codes: np.ndarray) -> faiss.Index:
        index = faiss.IndexFlatIP(codes.shape[1])
        index.add(np.ascontiguousarray(codes, dtype=np.float32))
        return index

    def factory(self, spec: str) -> str:
        return spec

    def new_index(self, dim: int, factory: str) -> faiss.Index:
        return faiss.index_factory(dim, self.factory(factory), faiss.METRIC_INNER_PRODUCT)

    def set_search_params(self, index, params: str) -> None:
        # faiss's stub takes the overload for one parameter's value; a "name=value,..." string is the other one.
        faiss.ParameterSpace().set_index_parameters(index, params)  # type: ignore[arg-type]

    def write_index(self, index, path: Path) -> None:
        faiss.write_index(index, str(path))

    def read_index(self, path: Path):
        return faiss.read_index(str(path))

    def compare(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # Rows are already unit length, so the inner product is the cosine.
        return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", a.astype(np.float32), b.astype(np.float32))


class Hamming(Metric):
    name = "hamming"
    score_name = "Hamming distance"
    higher_is_better = False
    dtype = np.uint8
    score_dtype = np.int32
    binary = True

    def code_width(self, dim: int) -> int:
        return dim // 8

    def build_index(self, codes: np.ndarray) -> faiss.IndexBinary:
        index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        index.add(np.ascontiguousarray(codes, dtype=np.uint8))
        return index

    def factory(self, spec: str) -> str:
        """FAISS's binary grammar (``Flat`` -> ``BFlat``, ``HNSW32`` -> ``BHNSW32``, ``IVF1024,Flat`` ->
        ``BIVF1024``); hashes are already compact, so no PQ."""
        if spec.startswith("B"):
            return spec
        body = spec.removesuffix(",Flat")
        if "PQ" in body or "," in body:
            raise ConfigError(f"--index {spec!r} does not apply to binary hashes; use Flat, HNSW32 or IVF<K>,Flat")
        return "B" + body

    def new_index(self, dim: int, factory: str) -> faiss.IndexBinary:
        return faiss.index_binary_factory(dim, self.factory(factory))

    def set_search_params(self, index, params: str) -> None:
        # FAISS's ParameterSpace knows only float indexes; binary ones expose the same knobs as attributes.
        for key, value in (pair.split("=", 1) for pair in params.split(",")):
            if key == "efSearch":
                index.hnsw.efSearch = int(value)
            elif key == "nprobe" and hasattr(index, "nprobe"):
                index.nprobe = int(value)
            else:
                raise ValueError(f"{key} is not a search parameter of {type(index).__name__}")

    def write_index(self, index, path: Path) -> None:
        faiss.write_index_binary(index, str(path))

    def read_index(self, path: Path):
        return faiss.read_index_binary(str(path))

    def compare(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.uint8)
        b = np.asarray(b, dtype=np.uint8)
        out = np.empty((len(a), len(b)), dtype=np.int32)
        for start in range(0, len(a), _HAMMING_ROWS_PER_BLOCK):
            block = a[start : start + _HAMMING_ROWS_PER_BLOCK]
            out[start : start + len(block)] = _popcount(block[:, None, :] ^ b[None, :, :])
        return out

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _popcount(np.asarray(a, dtype=np.uint8) ^ np.asarray(b, dtype=np.uint8))

    def format_score(self, score: float, dim: int) -> str:
        return f"{int(score)}/{dim} bits"


def _popcount(xor: np.ndarray) -> np.ndarray:
    """Set bits along the last axis: the one Hamming kernel."""
    return np.bitwise_count(xor).sum(axis=-1, dtype=np.int32)


IP = InnerProduct()
HAMMING = Hamming()
METRICS: dict[str, Metric] = {m.name: m for m in (IP, HAMMING)}


def metric_named(name: str) -> Metric:
    """The metric stored under ``name`` (in cache metadata, an embeddings manifest); a ConfigError if unknown."""
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}") from None


"""The one contract every retrieval method implements.

A descriptor turns images into fixed-size codes and scores pairs of codes in
its native unit. Float descriptors emit L2-normalised float32 rows, so inner
product is cosine similarity; hash descriptors emit bits packed with
``np.packbits`` and score by Hamming distance.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from malle.imageio import load_rgb

# progress(total=, desc=) -> object with update(n) and close(); tqdm.tqdm fits.
ProgressFactory = Callable[..., Any]

METRIC_IP = "ip"
METRIC_HAMMING = "hamming"

# Scoring an (a x b) pair matrix in row blocks keeps the xor temporary small.
_HAMMING_ROWS_PER_BLOCK = 1024


class WeightsUnavailable(RuntimeError):
    """Model weights cannot be had; ``str(err)`` tells the user how to provide them."""


class Descriptor(ABC):
    name: ClassVar[str]
    metric: ClassVar[str]
    score_name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    # Distributions whose versions change the codes; part of the fingerprint.
    packages: ClassVar[tuple[str, ...]] = ("numpy", "Pillow")
    label: str
    dim: int

    @abstractmethod
    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 (n, dim) L2-normalised, or uint8 (n, dim // 8) packed bits."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """Everything that identifies this descriptor's outputs, for cache keys."""

    def encode_files(
        self, paths: Sequence[Path], batch_size: int = 32, progress: ProgressFactory | None = None,
        desc: str | None = None,
    ) -> np.ndarray:
        """Load each file with ``load_rgb`` (``BadImage`` propagates) and encode; ``desc`` labels progress."""
        bar = open_progress(progress, len(paths), desc or self.label)
        try:
            return self._encode_paths(paths, batch_size, bar)
        finally:
            bar.close()

    def _encode_paths(self, paths: Sequence[Path], batch_size: int, bar) -> np.ndarray:
        """Decode a batch, encode it; subclasses override to overlap decoding with encoding."""
        chunks = []
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            chunks.append(self.encode([load_rgb(p) for p in batch]))
            bar.update(len(batch))
        return self._stack(chunks)

    def compare(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(len(a), len(b)) scores: cosine similarity or integer Hamming distance."""
        if self.metric == METRIC_IP:
            return cosine_similarity(a, b)
        if self.metric == METRIC_HAMMING:
            return hamming_distance(a, b)
        raise ValueError(f"{self.name}: unknown metric {self.metric!r}")

    def code_width(self) -> int:
        """Columns of one encoded row: floats, or bytes of packed bits."""
        return self.dim if self.metric == METRIC_IP else self.dim // 8

    def empty_codes(self) -> np.ndarray:
        dtype = np.float32 if self.metric == METRIC_IP else np.uint8
        return np.zeros((0, self.code_width()), dtype=dtype)

    def _stack(self, chunks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(chunks, axis=0) if chunks else self.empty_codes()

    def _base_fingerprint(self) -> dict:
        return {
            "name": self.name,
            "dim": self.dim,
            "metric": self.metric,
            "packages": package_versions(self.packages),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.label}>"


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Rows are already unit length, so the inner product is the cosine.
    return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    out = np.empty((len(a), len(b)), dtype=np.int32)
    for start in range(0, len(a), _HAMMING_ROWS_PER_BLOCK):
        block = a[start : start + _HAMMING_ROWS_PER_BLOCK]
        xor = np.bitwise_xor(block[:, None, :], b[None, :, :])
        out[start : start + len(block)] = np.bitwise_count(xor).sum(axis=2, dtype=np.int32)
    return out


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # An all-zero row stays zero instead of becoming NaN.
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def package_versions(names: Sequence[str]) -> dict[str, str]:
    versions = {}
    for dist in names:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def open_progress(progress: ProgressFactory | None, total: int, desc: str):
    return progress(total=total, desc=desc) if progress is not None else _NoProgress()

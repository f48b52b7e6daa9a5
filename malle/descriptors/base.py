"""The one contract every retrieval method implements.

A descriptor turns images into fixed-size codes; its ``metric`` (``malle.metrics``)
says how codes are scored. Float descriptors emit L2-normalised float32 rows
scored by inner product; hash descriptors emit bits packed with ``np.packbits``
scored by Hamming distance.

Weights are handled the same way for every descriptor: ``weights_status`` says,
without loading anything, whether they can be had and how to provide them, and
``load`` builds the model (raising ``WeightsUnavailable``) before any other work.
"""

from __future__ import annotations

import importlib.metadata
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from malle.errors import ConfigError, WeightsUnavailable
from malle.imageio import load_rgb
from malle.metrics import Metric

# progress(total=, desc=) -> object with update(n) and close(); tqdm.tqdm fits.
ProgressFactory = Callable[..., Any]

__all__ = ["Descriptor", "Unavailable", "WeightsStatus", "WeightsUnavailable", "file_identity", "open_progress"]


@dataclass(frozen=True)
class WeightsStatus:
    available: bool
    source: str  # where the weights come from, or why they cannot be had
    fix: str = ""  # how to provide them, when they cannot be had


@dataclass(frozen=True)
class Unavailable:
    """A method that cannot run here: which, why, and how to fix it."""

    method: str
    label: str
    reason: str
    fix: str

    def notice(self) -> str:
        return f"{self.label} skipped: {self.reason}. {self.fix}"


class Descriptor(ABC):
    name: ClassVar[str]
    family: ClassVar[str]  # "perceptual hash", "ImageNet CNN", ...
    metric: ClassVar[Metric]
    default: ClassVar[bool] = False  # in the default method set when it can run
    # Environment variable that names a weights file, for descriptors whose weights a user provides.
    weights_env: ClassVar[str | None] = None
    # Distributions whose versions change the codes; part of the fingerprint.
    packages: ClassVar[tuple[str, ...]] = ("numpy", "Pillow")
    label: str
    dim: int

    def __init__(self, weights: str | Path | None = None) -> None:
        """``weights``: a file for descriptors that take one (``weights_env``); others take none."""
        if weights is not None and self.weights_env is None:
            raise ConfigError(f"{self.name} takes no weights file (got {weights})")

    @classmethod
    def resolve_weights(cls, weights: str | Path | None) -> str | Path | None:
        """An explicit value wins, else the descriptor's environment variable, else None (its default)."""
        if weights is not None:
            return weights
        return (os.environ.get(cls.weights_env) or None) if cls.weights_env else None

    @classmethod
    def weights_status(cls, weights: str | Path | None = None) -> WeightsStatus:
        """Whether this descriptor can run here, without loading or downloading anything."""
        return WeightsStatus(True, "no weights needed")

    @classmethod
    def unavailable(cls, weights: str | Path | None = None) -> Unavailable | None:
        status = cls.weights_status(cls.resolve_weights(weights))
        return None if status.available else Unavailable(cls.name, cls.display_name(), status.source, status.fix)

    @classmethod
    def display_name(cls) -> str:
        return getattr(cls, "label", cls.name)

    def load(self) -> None:
        """Build whatever the descriptor needs now, raising ``WeightsUnavailable`` early."""

    @abstractmethod
    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 (n, dim) L2-normalised, or uint8 (n, dim // 8) packed bits."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """Everything that identifies this descriptor's outputs, for cache keys. Must be cheap:
        no model is built and no weights file is read."""

    @property
    def score_name(self) -> str:
        return self.metric.score_name

    @property
    def higher_is_better(self) -> bool:
        return self.metric.higher_is_better

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
        return self.metric.compare(a, b)

    def code_width(self) -> int:
        """Columns of one encoded row: floats, or bytes of packed bits."""
        return self.metric.code_width(self.dim)

    def empty_codes(self) -> np.ndarray:
        return self.metric.empty_codes(self.dim)

    def _stack(self, chunks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(chunks, axis=0) if chunks else self.empty_codes()

    def _base_fingerprint(self) -> dict:
        return {
            "name": self.name,
            "dim": self.dim,
            "metric": self.metric.name,
            "packages": package_versions(self.packages),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.label}>"


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


def file_identity(path: Path) -> str:
    """A weights file's identity for cache keys, from one stat call rather than hashing it.

    Like the dataset fingerprint: size, mtime and ctime (an in-place rewrite with the
    old mtime restored still moves the ctime), plus where it lives.
    """
    info = Path(path).stat()
    return f"file:{Path(path).resolve()}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def open_progress(progress: ProgressFactory | None, total: int, desc: str):
    return progress(total=total, desc=desc) if progress is not None else _NoProgress()

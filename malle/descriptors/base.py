"""The one contract every retrieval method implements.

A descriptor turns images into fixed-size codes; its ``metric`` (``malle.retrieval.metrics``)
says how codes are scored. Float descriptors emit L2-normalised float32 rows
scored by inner product; hash descriptors emit bits packed with ``np.packbits``
scored by Hamming distance.

Weights are handled the same way for every descriptor: ``weights_status`` says,
without loading anything, whether they can be had and how to provide them, and
``load`` builds the model (raising ``WeightsUnavailable``) before any other work.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from PIL import Image

from malle.errors import BadImage, ConfigError, WeightsUnavailable
from malle.inference.onnx import default_threads
from malle.io import cache
from malle.io.images import load_rgb
from malle.retrieval.metrics import Metric

# progress(total=, desc=) -> object with update(n) and close(); tqdm.tqdm fits.
ProgressFactory = Callable[..., Any]
SKIPPING_CHUNK = 256  # files encoded together when bad ones may be among them

__all__ = ["Descriptor", "Encoded", "Unavailable", "WeightsStatus", "WeightsUnavailable", "file_identity",
           "open_progress", "weights_identity"]


@dataclass
class Encoded:
    """Codes, and for methods that score their own confidence (PDQ) a quality per image, 0..100."""

    codes: np.ndarray
    quality: np.ndarray | None = None


@dataclass
class Skipping:
    """Codes of the usable files, their positions in the input, and the files left out with a reason."""

    codes: np.ndarray
    kept: np.ndarray
    skipped: pd.DataFrame


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
    short_name: ClassVar[str] = ""  # the method without details, for cards: "PDQ dihedral" (see card_name)
    # A malle.descriptors.families.Family (name, title, order); a plug-in's plain name is titled by itself.
    family: ClassVar[str]
    metric: ClassVar[Metric]
    default: ClassVar[bool] = False  # in the default method set when it can run
    # Environment variable that names a weights file, for descriptors whose weights a user provides.
    weights_env: ClassVar[str | None] = None
    # Distributions whose versions change the codes; part of the fingerprint.
    packages: ClassVar[tuple[str, ...]] = ("numpy", "Pillow")
    # Codes per query: 1, or several variants matched by their best score (PDQ's 8 orientations).
    query_variants: ClassVar[int] = 1
    # For methods with a quality score: below this a code is counted as low quality.
    quality_threshold: ClassVar[int | None] = None
    precision: ClassVar[str] = "fp32"  # what the model computes in, shown in labels and the Overview
    # Whether a run's --precision applies (the CNNs: fp32 or int8); other methods have one fixed precision.
    precision_choice: ClassVar[bool] = False
    weights_source: str = "none: an algorithm without learned weights"
    licence: ClassVar[str] = ""  # of the weights (or the implementation, for hashes)
    label: str
    dim: int

    def __init__(self, weights: str | Path | None = None) -> None:
        """``weights``: a file for descriptors that take one (``weights_env``); others take none."""
        if weights is not None and self.weights_env is None:
            raise ConfigError(f"{self.name} takes no weights file (got {weights})")
        self.digest_memo: Path | None = None  # where weights digests are remembered (the experiment's cache)
        self.file_workers = default_threads()  # threads that decode files for per-image methods (hashes)
        self.notices: list[str] = []  # what the run's log should say about this method (a fallback, say)

    def use_cache(self, root: Path) -> None:
        """Keep what this descriptor derives from its weights (digests, exported models) under ``root``."""
        self.digest_memo = Path(root) / "digests"

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

    def card_name(self) -> str:
        """The method's name short enough for a card: its short name, else its registry name."""
        return self.short_name or self.name

    def load(self) -> None:
        """Build whatever the descriptor needs now, raising ``WeightsUnavailable`` early."""

    def runtime(self) -> str:
        """What computes the codes, for costs.csv and the Overview (e.g. 'ONNX Runtime int8 QDQ')."""
        return "NumPy and Pillow on the CPU"

    def provenance(self) -> dict[str, str]:
        """What this method is, for every table that names it: family, weights and their licence, precision."""
        return {"method": self.name, "label": self.label, "family": str(self.family), "precision": self.precision,
                "weights": self.weights_source, "licence": self.licence}

    @abstractmethod
    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 (n, dim) L2-normalised, or uint8 (n, dim // 8) packed bits."""

    def encode_queries(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Codes for query images: ``encode`` unless the method has several variants per query,
        then (n, query_variants, width)."""
        return self.encode(images)

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
        desc: str | None = None, queries: bool = False,
    ) -> np.ndarray:
        """Load each file with ``load_rgb`` (``BadImage`` propagates) and encode; ``desc`` labels progress.

        ``queries``: encode them as queries (see ``encode_queries``).
        """
        return self.encode_files_scored(paths, batch_size, progress, desc, queries).codes

    def encode_files_scored(
        self, paths: Sequence[Path], batch_size: int = 32, progress: ProgressFactory | None = None,
        desc: str | None = None, queries: bool = False,
    ) -> Encoded:
        """``encode_files`` with each image's quality, for methods that have one."""
        bar = open_progress(progress, len(paths), desc or self.label)
        try:
            if queries and self.query_variants > 1:
                return Encoded(self._encode_query_paths(paths, batch_size, bar))
            return self._encode_paths_scored(paths, batch_size, bar)
        finally:
            bar.close()

    def _map_files(self, fn: Callable[[Image.Image], Any], paths: Sequence[Path], bar) -> list:
        """``fn(load_rgb(path))`` for every path on ``file_workers`` threads, in input order; a worker's
        BadImage re-raises here. For per-image methods (hashes): decoding releases the GIL, so the
        threads overlap decoding with hashing."""
        results = []
        with ThreadPoolExecutor(max_workers=self.file_workers, thread_name_prefix=f"{self.name}-files") as pool:
            for result in pool.map(lambda path: fn(load_rgb(path)), paths):
                results.append(result)
                bar.update(1)
        return results

    def encode_files_skipping(
        self, paths: Sequence[Path], batch_size: int = 32, progress: ProgressFactory | None = None,
        desc: str | None = None,
    ) -> Skipping:
        """``encode_files`` for folders nobody has checked (extra references, ``malle embed``): a file that
        is not a usable image is left out and recorded with its reason instead of stopping the run.

        Files go in chunks at full speed; only a chunk that holds a bad file is encoded again one by one.
        """
        bar = open_progress(progress, len(paths), desc or self.label)
        codes: list[np.ndarray] = []
        kept: list[int] = []
        skipped: list[dict] = []
        try:
            for start in range(0, len(paths), SKIPPING_CHUNK):
                part = list(paths[start : start + SKIPPING_CHUNK])
                counted = _Counting(bar)
                try:
                    codes.append(self._encode_paths(part, batch_size, counted))
                    kept += range(start, start + len(part))
                except BadImage:
                    for offset, path in enumerate(part):
                        try:
                            codes.append(self._encode_paths([path], 1, _NoProgress()))
                            kept.append(start + offset)
                        except BadImage as err:
                            skipped.append({"path": str(path), "reason": str(err)})
                    bar.update(len(part) - counted.n)
        finally:
            bar.close()
        return Skipping(self._stack(codes), np.asarray(kept, dtype=np.int64),
                        pd.DataFrame(skipped, columns=["path", "reason"]))

    def _encode_paths_scored(self, paths: Sequence[Path], batch_size: int, bar) -> Encoded:
        return Encoded(self._encode_paths(paths, batch_size, bar))

    def _encode_query_paths(self, paths: Sequence[Path], batch_size: int, bar) -> np.ndarray:
        chunks = []
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            chunks.append(self.encode_queries([load_rgb(p) for p in batch]))
            bar.update(len(batch))
        return np.concatenate(chunks) if chunks else self.encode_queries([])

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
    return dict(_installed_versions(tuple(names)))


@functools.cache
def _installed_versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # Read once per process: importlib.metadata scans site-packages, and every cache key asks for them.
    versions = {}
    for dist in names:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return tuple(versions.items())


def file_identity(path: Path) -> str:
    """A file's identity from one stat call: where it lives, size, mtime and ctime.

    Like the dataset fingerprint, an in-place rewrite with the old mtime restored
    still moves the ctime.
    """
    info = Path(path).stat()
    return f"{Path(path).resolve()}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def weights_identity(path: Path, memo: Path | None = None) -> str:
    """``sha256:<digest>`` of a weights or model file, for cache keys.

    With ``memo`` (a folder; the experiment passes its cache's ``digests/``), the digest
    is remembered under the file's stat identity, so a run whose stages are cached
    hashes nothing: it costs one stat and one small read. A file rewritten in place
    gets a new identity and is hashed again.
    """
    record = Path(memo) / f"{cache.fingerprint(file_identity(path))}.json" if memo else None
    if record is not None:
        try:
            return f"sha256:{cache.read_json(record)['sha256']}"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = cache.file_digest(Path(path))
    if record is not None:
        try:
            cache.write_json(record, {"path": str(Path(path).resolve()), "sha256": digest})
        except OSError:
            pass  # a read-only cache only means hashing again next time
    return f"sha256:{digest}"


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Counting:
    """Passes progress on and remembers how much, so a chunk that is redone is not counted twice."""

    def __init__(self, bar):
        self.bar, self.n = bar, 0

    def update(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)


def open_progress(progress: ProgressFactory | None, total: int, desc: str):
    return progress(total=total, desc=desc) if progress is not None else _NoProgress()

"""Descriptors whose codes are a neural network's features, run by an engine from ``malle.inference``.

The ImageNet CNNs and SSCD share this: the engine is chosen by the precision policy
(``malle.inference.precision``) and prepared in the experiment's model folder;
worker threads decode and preprocess the next batches while the engine runs this one
(``malle.inference.pipeline``); features are L2-normalised.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from malle.data.sampling import demo_root
from malle.descriptors.base import Descriptor, l2_normalise, open_progress
from malle.errors import ConfigError, DatasetError
from malle.inference.engines import Engine
from malle.inference.model import CalibrationFailed, CalibrationSet, ExportFailed, Model
from malle.inference.pipeline import pipelined
from malle.inference.precision import choose_engine, fallback_engine, runnable
from malle.io import cache
from malle.io.images import load_rgb
from malle.retrieval.metrics import IP


def demo_photos() -> list[Path]:
    """The ai-benchmark demo photos by file name: real, offline, the same on every machine."""
    try:
        return sorted(p for p in demo_root().iterdir() if p.suffix.lower() in {".jpg", ".jpeg"})
    except DatasetError as err:
        raise CalibrationFailed(f"no calibration photos ({err})") from None


DEMO_CALIBRATION = CalibrationSet("ai-benchmark photos", demo_photos)


class NetworkDescriptor(Descriptor):
    """A network's pooled features as L2-normalised float32 rows, scored by inner product."""

    metric = IP
    base_label: str  # the label without the engine and precision it runs on, which the engine adds

    def __init__(self, weights: str | Path | None = None, engine: str | type[Engine] = "auto",
                 precision: str = "auto", threads: int | None = None) -> None:
        """``engine``: a runtime (``malle.inference.precision.ENGINES``) for the policy to choose within, or an
        engine class to run instead of the policy's choice."""
        super().__init__(weights)
        self.threads = threads
        self.model_dir: Path | None = None  # where exported models are kept (the experiment's cache)
        self._engine_kind = engine if isinstance(engine, type) else choose_engine(self.name, precision, engine)
        self._engine: Engine | None = None
        self._loaded = False

    @property
    def label(self) -> str:  # type: ignore[override]  # a class attribute for fixed methods; here, the engine's
        return with_precision(self.base_label, self.engine.path())

    @property
    def precision(self) -> str:  # type: ignore[override]  # a class attribute for fixed methods; here, the engine's
        return self.engine.precision

    @classmethod
    def display_name(cls) -> str:
        return cls.base_label

    @abstractmethod
    def network(self) -> Model:
        """The model the engine runs. Cheap: builds and reads nothing."""

    @abstractmethod
    def prepare_image(self, image: Image.Image) -> np.ndarray:
        """One image to one model input."""

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            model = self.network()
            kind = runnable(self._engine_kind, model)
            if not kind.installed():  # decided before the engine's description enters any cache key
                fallback = fallback_engine(kind, model)
                if fallback is None:
                    raise ConfigError(f"{self.name}: {kind.summary} is not installed, and nothing else runs it")
                self.notices.append(f"{self.name}: {kind.summary} is not installed; running {fallback.summary} "
                                    f"instead.")
                kind = fallback
            self._engine = kind(model, DEMO_CALIBRATION, self.threads)
        return self._engine

    @property
    def batch(self) -> int:
        """Images per forward pass at most."""
        return self.engine.batch

    def use_cache(self, root: Path) -> None:
        super().use_cache(root)
        self.model_dir = Path(root) / "models"

    def models_folder(self) -> Path:
        return self.model_dir or cache.default_root() / "models"

    def load(self) -> None:
        """Prepare the engine now (raising WeightsUnavailable early). An engine that cannot be prepared
        gives way to the policy's fallback, with a notice."""
        if not self._loaded:
            self.load_engine()
            self._loaded = True

    def load_engine(self) -> None:
        """Load the engine; if it fails, the next in line (the exact engine, then eager PyTorch)."""
        try:
            self.engine.load(self.models_folder())
        except ExportFailed as err:
            fallback = fallback_engine(type(self.engine), self.engine.model, err)
            if fallback is None:
                raise
            self.notices.append(f"{self.label}: {err.stage} failed ({err}); running {fallback.summary} instead.")
            self._engine = fallback(self.engine.model, DEMO_CALIBRATION, self.threads)
            self.load_engine()

    def prepare_file(self, path: Path) -> np.ndarray:
        return self.prepare_image(load_rgb(path))

    def encode(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        return self._pipelined(images, batch_size, self.prepare_image, open_progress(None, 0, ""))

    def _encode_paths(self, paths: Sequence[Path], batch_size: int, bar) -> np.ndarray:
        return self._pipelined(paths, batch_size, self.prepare_file, bar)

    def _pipelined(self, items: Sequence, batch_size: int, prepare: Callable, bar) -> np.ndarray:
        """Prepare the next batches on worker threads while the engine runs this one."""
        self.load()  # build (and fail on weights) before decoding anything
        chunks = pipelined(items, min(batch_size, self.batch), prepare, self._embed, bar.update)
        return self._stack(chunks)

    def _embed(self, arrays: list[np.ndarray]) -> np.ndarray:
        features = np.concatenate([self.engine.run(batch) for batch in same_shape_batches(arrays)])
        if features.shape != (len(arrays), self.dim):
            raise RuntimeError(f"{self.name}: model gave {tuple(features.shape)}, expected (n, {self.dim})")
        return l2_normalise(features)


def same_shape_batches(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Consecutive arrays of one shape stacked together, order kept."""
    batches: list[list[np.ndarray]] = []
    for array in arrays:
        if batches and batches[-1][0].shape == array.shape:
            batches[-1].append(array)
        else:
            batches.append([array])
    return [np.stack(batch) for batch in batches]


def with_precision(label: str, precision: str) -> str:
    """'EfficientNet-Lite2 (ImageNet, 1280-d)' -> 'EfficientNet-Lite2 (ImageNet, 1280-d, OpenVINO bf16)'."""
    return f"{label[:-1]}, {precision})" if label.endswith(")") else f"{label} ({precision})"

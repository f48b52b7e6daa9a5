"""How an image becomes a model's input, in the terms of timm's ``pretrained_cfg``.

``PreprocessConfig`` holds a model's input size, interpolation, ``crop_pct``, mean and std.
Float models (the ImageNet CNNs) resize the shorter side to ``size / crop_pct``, centre-crop
``size`` and normalise, as timm's eval transform does. Models that take uint8 pixels and
normalise inside their graph (SSCD and its student) have no mean or std; ``SquareResize``
and ``ShortSideResize`` make their batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "bicubic": transforms.InterpolationMode.BICUBIC,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """A model's input: ``input_size`` (channels, height, width), ``interpolation``, ``crop_pct``, ``mean`` and
    ``std`` as in timm; mean and std are None for a graph that takes uint8 pixels and normalises itself."""

    input_size: tuple[int, int, int]
    interpolation: str
    crop_pct: float = 1.0
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)} (got {self.interpolation!r})")

    @property
    def size(self) -> int:
        """The square side the model sees."""
        return self.input_size[-1]

    @property
    def resize(self) -> int:
        """The shorter side before the centre crop, as timm computes it (floor of size / crop_pct)."""
        return math.floor(self.size / self.crop_pct)

    def float_transform(self) -> transforms.Compose:
        """PIL image -> normalised (3, size, size) float tensor: resize the shorter side, centre-crop, normalise."""
        if self.mean is None or self.std is None:
            raise ValueError("a float transform needs the model's mean and std")
        return transforms.Compose([
            transforms.Resize(self.resize, interpolation=INTERPOLATIONS[self.interpolation]),
            transforms.CenterCrop(self.size),
            transforms.ToTensor(),
            transforms.Normalize(self.mean, self.std),
        ])

    def describe(self) -> dict:
        """For cache keys."""
        return {"resize": self.resize, "crop": self.size, "mean": list(self.mean or ()), "std": list(self.std or ()),
                "interpolation": self.interpolation}

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

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Pillow's filters, as torchvision maps its InterpolationMode onto them for PIL images.
INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
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

    def float_transform(self) -> FloatTransform:
        """PIL image -> normalised (3, size, size) float32 array: resize the shorter side, centre-crop, normalise."""
        if self.mean is None or self.std is None:
            raise ValueError("a float transform needs the model's mean and std")
        return FloatTransform(self.resize, self.size, INTERPOLATIONS[self.interpolation], self.mean, self.std)

    def describe(self) -> dict:
        """For cache keys."""
        return {"resize": self.resize, "crop": self.size, "mean": list(self.mean or ()), "std": list(self.std or ()),
                "interpolation": self.interpolation}


class FloatTransform:
    """torchvision's ``Resize(short) -> CenterCrop(size) -> ToTensor() -> Normalize(mean, std)`` on an RGB PIL
    image, in Pillow and NumPy, with the same bytes out.

    Without torchvision because importing it costs seconds (it imports PyTorch's compiler) in the dashboard's
    process, which has no other use for it. The same bytes because torchvision's steps on a PIL image are
    Pillow's resize and crop with the same arguments, and per pixel value ``(v / 255 - mean) / std`` in float32:
    that last step takes 256 values per channel, so it is a lookup table made by the same float32 operations,
    which ``tests/test_inference.py`` checks against torchvision for every value and against timm on photos.
    """

    def __init__(self, short_side: int, size: int, resample: Image.Resampling, mean: tuple[float, float, float],
                 std: tuple[float, float, float]) -> None:
        self.short_side, self.size, self.resample = short_side, size, resample
        values = np.arange(256, dtype=np.float32) / np.float32(255)
        mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.table = ((values[None, :] - mean32[:, None]) / std32[:, None]).astype(np.float32)  # (3, 256)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """torchvision's size for ``Resize(int)``: the shorter side becomes ``short_side``, the longer truncated."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.short_side, int(self.short_side * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, image: Image.Image) -> np.ndarray:
        if image.mode != "RGB":
            raise ValueError(f"a float transform takes RGB images (got mode {image.mode})")
        new_size = self.resized_size(*image.size)
        if new_size != image.size:
            image = image.resize(new_size, self.resample)
        width, height = image.size
        top, left = int(round((height - self.size) / 2.0)), int(round((width - self.size) / 2.0))
        pixels = np.asarray(image.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)
        return np.stack([self.table[c][pixels[:, :, c]] for c in range(3)])

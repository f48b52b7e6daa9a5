"""How an image is resized for a network: one class per way, shared by the built-in ONNX descriptors (SSCD and
its student) and users' ONNX method specs (``onnx_spec``). Each returns a PIL image and says what it did, both
for the record (``settings``) and for a descriptor's fingerprint (``describe``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from PIL import Image

BILINEAR = Image.Resampling.BILINEAR


@dataclass(frozen=True)
class Square:
    """Both sides to ``size`` (aspect not kept): the whole picture, one batchable shape, as SSCD does."""

    size: int
    resample: Image.Resampling = BILINEAR
    varies: ClassVar[bool] = False  # whether images keep shapes of their own

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.resize((self.size, self.size), self.resample)

    def settings(self) -> dict:
        return {"resize": "square", "size": self.size, "interpolation": self.resample.name.lower()}

    def describe(self) -> str:
        return f"{self.size}x{self.size} square"


@dataclass(frozen=True)
class ShortSide:
    """The shorter side to ``size``, aspect kept (rounded as SSCD's short-side resize): shapes differ, so each
    shape is its own batch."""

    size: int
    resample: Image.Resampling = BILINEAR
    varies: ClassVar[bool] = True

    def __call__(self, img: Image.Image) -> Image.Image:
        scale = self.size / min(img.size)
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), self.resample)

    def settings(self) -> dict:
        return {"resize": "short_side", "size": self.size, "interpolation": self.resample.name.lower()}

    def describe(self) -> str:
        return f"short side {self.size}"


@dataclass(frozen=True)
class ShortSideCrop:
    """timm's evaluation transform: the shorter side to floor(size / crop_pct), then the centre size x size
    (torchvision's Resize and CenterCrop arithmetic)."""

    size: int
    resample: Image.Resampling
    crop_pct: float
    varies: ClassVar[bool] = False

    def __call__(self, img: Image.Image) -> Image.Image:
        short = math.floor(self.size / self.crop_pct)
        if img.width <= img.height:
            scaled = (short, int(short * img.height / img.width))
        else:
            scaled = (int(short * img.width / img.height), short)
        img = img.resize(scaled, self.resample)
        left, top = round((img.width - self.size) / 2), round((img.height - self.size) / 2)
        return img.crop((left, top, left + self.size, top + self.size))

    def settings(self) -> dict:
        return {"resize": "short_side_crop", "size": self.size, "interpolation": self.resample.name.lower(),
                "crop_pct": self.crop_pct}

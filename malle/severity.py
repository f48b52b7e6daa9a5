"""Severity sweeps: every op alone, at a grid of strengths in its own unit, applied to every original.

A grid's first level is the untouched original, so every method should find
every original there. Parameters that only place an edit (a crop's position, the
text's seed, the sticker's colour) are drawn once per (original, op) from a
generator seeded by the run seed, so along a curve only the strength changes.
Every level goes through the op registry's ``apply``: there is no second
implementation of any op here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from .augment import OPS, Size, copy_rng
from .errors import BadImage
from .imageio import check_shape

MIN_RECALL = 0.9  # the breaking point: the first level whose Recall@1 falls below this


@dataclass(frozen=True)
class Grid:
    """The strengths of one op's sweep and how each becomes the op's parameters for one image."""

    op: str
    unit: str  # the human parameter, e.g. "angle"
    values: tuple[float, ...]  # values[0] is the untouched original
    params: Callable[[float, Size, np.random.Generator], dict]

    def describe(self, value: float) -> str:
        return f"{self.unit}={value:g}"

    def make(self, img: Image.Image, value: float, rng: np.random.Generator) -> Image.Image:
        """The image at this strength (a copy of the original at the first level); BadImage if unusable.

        ``rng`` places the edit; give every level of one original a generator in the same state
        (``placement_rng``) so that only the strength changes along the curve.
        """
        if value == self.values[0]:
            return img.copy()
        out = OPS[self.op].apply(img, self.params(value, img.size, rng))
        check_shape(out.size)
        if out.width * out.height > Image.MAX_IMAGE_PIXELS:
            raise BadImage(f"larger than the decompression-bomb limit ({out.width}x{out.height})")
        return out


def _xy(rng: np.random.Generator) -> dict:
    return {"x": round(float(rng.uniform()), 4), "y": round(float(rng.uniform()), 4)}


def _side(fraction: float, size: Size) -> int:
    return max(1, int(round(fraction * min(size))))


def _blur_kernel(sigma: float, size: Size) -> int:
    # Three sigmas each way, odd, and no wider than the image allows (reflect padding).
    kernel = 2 * math.ceil(3 * sigma) + 1
    limit = min(size) - 1 if min(size) % 2 == 0 else min(size)
    return max(3, min(kernel, limit))


GRIDS: dict[str, Grid] = {g.op: g for g in (
    Grid("centercrop", "side", (1.0, 0.9, 0.8, 0.65, 0.5, 0.4, 0.3),
         lambda v, size, rng: {"size": _side(v, size)}),
    Grid("randomcrop", "side", (1.0, 0.9, 0.8, 0.65, 0.5, 0.4, 0.3),
         lambda v, size, rng: {"size": _side(v, size), **_xy(rng)}),
    Grid("resize", "scale", (1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1),
         lambda v, size, rng: {"size": _side(v, size)}),
    Grid("rotate", "angle", (0, 5, 10, 15, 22.5, 30, 45), lambda v, size, rng: {"angle": float(v)}),
    Grid("blur", "sigma", (0, 0.5, 1, 2, 4, 6, 8),
         lambda v, size, rng: {"kernel": _blur_kernel(v, size), "sigma": float(v)}),
    Grid("color", "factor", (1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1),
         lambda v, size, rng: {"brightness": float(v), "contrast": float(v)}),
    Grid("hue", "shift", (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5), lambda v, size, rng: {"hue": float(v), "saturation": 1.0}),
    Grid("watermark", "opacity", (0, 40, 80, 120, 160, 200, 255),
         lambda v, size, rng: {**_xy(rng), "font_size": int(40 + 160 * v / 255), "opacity": int(v)}),
    Grid("jpeg", "quality", (100, 75, 50, 30, 20, 10, 5), lambda v, size, rng: {"quality": int(v)}),
    Grid("occlude", "area", (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
         lambda v, size, rng: {"size": max(1, int(round(math.sqrt(v * size[0] * size[1])))), **_xy(rng)}),
    Grid("hflip", "flipped", (0, 1), lambda v, size, rng: {}),
    Grid("rotatequarter", "turns", (0, 1, 2, 3), lambda v, size, rng: {"turns": int(v)}),
    Grid("pad", "border", (0, 0.05, 0.1, 0.2, 0.3, 0.5),
         lambda v, size, rng: {"fraction": float(v), "gray": int(rng.integers(0, 256))}),
    Grid("text", "font_size", (0, 16, 32, 48, 64, 96, 128),
         lambda v, size, rng: {"text_seed": int(rng.integers(0, 10000)), "font_size": int(v), **_xy(rng)}),
    Grid("sticker", "size", (0, 0.1, 0.2, 0.3, 0.4, 0.5),
         lambda v, size, rng: {"shape": int(rng.integers(0, 3)), "size": float(v),
                               "hue": round(float(rng.uniform()), 4), **_xy(rng)}),
    Grid("grayscale", "gray", (0, 1), lambda v, size, rng: {}),
    Grid("noise", "sigma", (0, 5, 10, 20, 35, 50, 75),
         lambda v, size, rng: {"sigma": float(v), "noise_seed": int(rng.integers(0, 10000))}),
    Grid("pixelate", "block", (1, 2, 4, 8, 16, 32, 64), lambda v, size, rng: {"block": int(v)}),
    Grid("perspective", "strength", (0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4),
         lambda v, size, rng: {"strength": float(v), "tilt": int(rng.integers(0, 4))}),
    Grid("screenshot", "bar", (0, 0.05, 0.1, 0.15, 0.2, 0.3),
         lambda v, size, rng: {"bar": float(v), "margin": 0.05, "dark": int(rng.integers(0, 2))}),
)}


def placement_rng(seed: int, original: str, op: str) -> np.random.Generator:
    return copy_rng(seed, f"severity:{op}:{original}")


def breaking_points(table: pd.DataFrame) -> pd.DataFrame:
    """Per (method, op): the first level whose Recall@1 falls below ``MIN_RECALL`` (empty if none does)."""
    rows = []
    for (method, op), part in table.sort_values("level").groupby(["method", "op"], sort=False):
        broken = part[part["recall_at_1"] < MIN_RECALL]
        first = broken.iloc[0] if len(broken) else None
        rows.append({"method": method, "op": op,
                     "level": int(first["level"]) if first is not None else pd.NA,
                     "param": first["param"] if first is not None else "",
                     "recall_at_1": float(first["recall_at_1"]) if first is not None else float("nan")})
    return pd.DataFrame(rows, columns=["method", "op", "level", "param", "recall_at_1"]).astype({"level": "Int64"})

"""Severity sweeps: every op alone, at a grid of strengths in its own unit, applied to every original.

Each op declares its grid as its ``sweep`` (see ``malle.ops.params.Sweep``). A
grid's first level is the untouched original, so every method should find every
original there. Parameters that only place an edit (a crop's position, the text's
seed, the sticker's colour) are drawn once per (original, op) from a generator
seeded by the run seed, so along a curve only the strength changes. Every level
goes through the op registry's ``apply``: there is no second implementation of
any op here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from malle import parallel
from malle.errors import BadImage
from malle.io.cache import write_bytes
from malle.io.images import check_shape, encode_jpeg, load_rgb
from malle.ops.copy_maker import COPY_JPEG_QUALITY, copy_rng
from malle.ops.params import Size
from malle.ops.registry import OPS, Op

MIN_RECALL = 0.9  # the breaking point: the first level whose Recall@1 falls below this


@dataclass(frozen=True)
class Grid:
    """The strengths of one op's sweep and how each becomes the op's parameters for one image."""

    op: str
    unit: str  # the human parameter, e.g. "angle"
    values: tuple[float, ...]  # values[0] is the untouched original
    params: Callable[[float, Size, np.random.Generator], dict]

    @classmethod
    def of(cls, op: Op) -> Grid:
        return cls(op.name, op.sweep.unit, op.sweep.values, op.sweep.params)

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
        if Image.MAX_IMAGE_PIXELS is not None and out.width * out.height > Image.MAX_IMAGE_PIXELS:
            raise BadImage(f"larger than the decompression-bomb limit ({out.width}x{out.height})")
        return out


# Every registered op's grid, in registry order (malle.ops imports every op module before this one).
GRIDS: dict[str, Grid] = {name: Grid.of(op) for name, op in OPS.items()}


def placement_rng(seed: int, original: str, op: str) -> np.random.Generator:
    return copy_rng(seed, f"severity:{op}:{original}")


@dataclass(frozen=True)
class LevelImage:
    """One original at one strength of one op, written as a JPEG: the unit of work a worker process does."""

    op: str
    value: float
    seed: int
    source: Path
    target: Path

    def make(self) -> str | None:
        """Write the image; the reason it is unusable instead (``BadImage``), or None when written. Each image
        depends on its own inputs alone (``placement_rng``), so workers write the bytes one process would."""
        try:
            out = GRIDS[self.op].make(load_rgb(self.source), self.value,
                                      placement_rng(self.seed, self.source.name, self.op))
        except BadImage as err:
            return str(err)
        write_bytes(self.target, encode_jpeg(out, COPY_JPEG_QUALITY))
        return None


def make_level_image(job: LevelImage) -> str | None:
    return job.make()


def make_level(jobs: Sequence[LevelImage], progress=None) -> list[str | None]:
    """Every image of one level on the worker pool (``malle.parallel``), in the jobs' order: their reasons."""
    reasons = []
    for reason in parallel.ordered_map(make_level_image, jobs):
        reasons.append(reason)
        if progress is not None:
            progress.update(1)
    return reasons


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

"""Whether a query image carries enough content to be matched: a quality gate per method.

A blank, near-uniform or tiny image says nothing about which photo it copies, yet its code still lands
somewhere in the collection, and with a loose threshold that somewhere can pass: a solid black JPEG once
matched a photo at 0.246 against a threshold of 0.236. So every query gets a verdict before its matches
are trusted: ``ok``, or ``low`` with the reason, and a low query's matches carry no ``is_match`` unless the
caller asks for it (``allow_low_quality``).

* PDQ and its dihedral form: PDQ's own quality score (0..100, from the image's gradients); Meta's guidance is
  to discard hashes below 50 (``malle.descriptors.pdq.QUALITY_THRESHOLD``).
* Every other method: a pixel rule on the image's luminance reduced to 64 x 64 (box filter): the standard
  deviation (near-uniformity) and the mean absolute difference between neighbours (edge energy).
* Every method: an image under ``MIN_SIDE`` pixels a side is too small to say anything.

The thresholds sit at half the smallest value measured on 1,000 real photos (ImageNet validation,
imagenet-200x5: standard deviation 12.2, edge energy 2.07, PDQ quality 55, shortest side 40 px), so no
photo of that set is called low; what they catch and the matches they prevent are measured by
``bench/serve_quality.py`` (bench/results/serve_quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from malle.descriptors import Descriptor
from malle.descriptors.pdq import PDQ, QUALITY_THRESHOLD

GRID = 64
MIN_STD = 6.0  # luminance standard deviation at 64 x 64, 0..255; smallest on the real photos: 12.2
MIN_EDGE = 1.0  # mean |neighbour difference| at 64 x 64; smallest on the real photos: 2.07
MIN_SIDE = 20  # pixels; the real photos' shortest side was 40
OK, LOW = "ok", "low"


@dataclass(frozen=True)
class Verdict:
    quality: str  # "ok" or "low"
    reason: str | None = None  # why it is low

    @property
    def low(self) -> bool:
        return self.quality == LOW


class QualityGate:
    """The pixel rule, for methods without a quality score of their own."""

    def verdict(self, image: Image.Image) -> Verdict:
        if min(image.size) < MIN_SIDE:
            return Verdict(LOW, f"tiny ({image.width}x{image.height}, under {MIN_SIDE} px a side)")
        return self.content(image)

    def content(self, image: Image.Image) -> Verdict:
        std, edge = pixel_measures(image)
        if std < MIN_STD:
            return Verdict(LOW, f"near-uniform (luminance deviation {std:.1f} < {MIN_STD:g})")
        if edge < MIN_EDGE:
            return Verdict(LOW, f"no detail (edge energy {edge:.2f} < {MIN_EDGE:g})")
        return Verdict(OK)


class PDQQualityGate(QualityGate):
    """PDQ's own score, with Meta's threshold."""

    def content(self, image: Image.Image) -> Verdict:
        import pdqhash

        _, score = pdqhash.compute(np.asarray(image.convert("RGB"), dtype=np.uint8))
        if score < QUALITY_THRESHOLD:
            return Verdict(LOW, f"PDQ quality {score} < {QUALITY_THRESHOLD}")
        return Verdict(OK)


def pixel_measures(image: Image.Image) -> tuple[float, float]:
    """(luminance standard deviation, mean absolute neighbour difference), both at 64 x 64, 0..255."""
    grid = np.asarray(image.convert("L").resize((GRID, GRID), Image.Resampling.BOX), dtype=np.float64)
    edge = (np.abs(np.diff(grid, axis=0)).mean() + np.abs(np.diff(grid, axis=1)).mean()) / 2
    return float(grid.std()), float(edge)


GATES: dict[type[Descriptor], QualityGate] = {PDQ: PDQQualityGate()}
PIXEL_GATE = QualityGate()


def gate_for(desc: Descriptor) -> QualityGate:
    """The gate of ``desc``'s method: its own quality score where it has one (PDQ and subclasses), else pixels."""
    return next((gate for cls, gate in GATES.items() if isinstance(desc, cls)), PIXEL_GATE)

"""Meta's PDQ: a 256-bit perceptual hash with a quality score, as trust-and-safety teams exchange it.

``pdqhash.compute`` gives the 256 bits and a quality from 0 to 100; Meta's guidance
is that a Hamming distance of 31 or less is a match and hashes of quality 49 or
less should be discarded. Here a low-quality hash is kept (the image is still
searchable) but counted and reported. ``pdq_dihedral`` keeps plain PDQ hashes in
the database and matches a query by the smallest distance over its 8 rotations
and flips.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from malle.descriptors.base import Descriptor, Encoded, WeightsStatus
from malle.descriptors.families import PERCEPTUAL_HASH
from malle.errors import BadImage
from malle.retrieval.metrics import HAMMING

PDQ_BITS = 256
MATCH_DISTANCE = 31  # Meta's documented threshold: a distance of 31 or less is a match
QUALITY_THRESHOLD = 50  # quality 49 or less should be discarded
MIN_SIDE = 5  # PDQ hashes anything smaller as all zeros with quality 0


class PDQ(Descriptor):
    name = "pdq"
    short_name = "PDQ"
    family = PERCEPTUAL_HASH
    label = "PDQ (Meta, 256-bit)"
    metric = HAMMING
    dim = PDQ_BITS
    precision = "binary hash"
    licence = "PDQ: Meta ThreatExchange licence; Python bindings (pdqhash): MIT"
    packages = ("pdqhash", "Pillow", "numpy")
    quality_threshold = QUALITY_THRESHOLD

    @classmethod
    def weights_status(cls, weights=None) -> WeightsStatus:
        if importlib.util.find_spec("pdqhash") is None:
            return WeightsStatus(False, "the package pdqhash is not installed",
                                 "Install it: pip install pdqhash==0.2.8")
        return WeightsStatus(True, "no weights needed")

    def runtime(self) -> str:
        return f"pdqhash (Meta's C++), {self.file_workers} decoding threads"

    def fingerprint(self) -> dict:
        return {**self._base_fingerprint(), "bit_order": "pdqhash order, packbits"}

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        return _stack([self._hash(image) for image in images], self).codes

    def _encode_paths(self, paths: Sequence[Path], batch_size: int, bar) -> np.ndarray:
        return self._encode_paths_scored(paths, batch_size, bar).codes

    def _encode_paths_scored(self, paths: Sequence[Path], batch_size: int, bar) -> Encoded:
        return _stack(self._map_files(self._hash, paths, bar), self)

    def _hash(self, image: Image.Image) -> tuple[np.ndarray, int]:
        """Packed bits (width,) and quality."""
        import pdqhash

        bits, quality = pdqhash.compute(_pixels(image))
        return np.packbits(np.asarray(bits, dtype=np.uint8)), int(quality)


def _pixels(image: Image.Image) -> np.ndarray:
    if min(image.size) < MIN_SIDE:
        raise BadImage(f"smaller than PDQ's minimum of {MIN_SIDE} px a side ({image.width}x{image.height})")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _stack(results: list[tuple[np.ndarray, int]], desc: PDQ, variants: int = 1) -> Encoded:
    if not results:
        shape = (0, desc.code_width()) if variants == 1 else (0, variants, desc.code_width())
        return Encoded(np.zeros(shape, dtype=np.uint8), np.zeros(0, dtype=np.int16))
    return Encoded(np.stack([codes for codes, _ in results]), np.array([q for _, q in results], dtype=np.int16))


class PDQDihedral(PDQ):
    """Plain PDQ in the database; each query is hashed in its 8 rotations and flips and matched by the best."""

    name = "pdq_dihedral"
    short_name = "PDQ dihedral"
    label = "PDQ dihedral (Meta, 256-bit, query in 8 orientations)"
    query_variants = 8

    def encode_queries(self, images: Sequence[Image.Image]) -> np.ndarray:
        return _stack([self._dihedral(image) for image in images], self, self.query_variants).codes

    def _encode_query_paths(self, paths: Sequence[Path], batch_size: int, bar) -> np.ndarray:
        return _stack(self._map_files(self._dihedral, paths, bar), self, self.query_variants).codes

    def _dihedral(self, image: Image.Image) -> tuple[np.ndarray, int]:
        """Packed bits (8, width), one row per orientation, and quality."""
        import pdqhash

        hashes, quality = pdqhash.compute_dihedral(_pixels(image))
        return np.stack([np.packbits(np.asarray(h, dtype=np.uint8)) for h in hashes]), int(quality)

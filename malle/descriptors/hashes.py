"""Perceptual hashes from the ImageHash package, as packed 64-bit codes.

Each method is one subclass that overrides only ``_hash_algo`` (the
imagededup pattern); packing, batching and scoring are shared.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from malle.descriptors.base import Descriptor
from malle.descriptors.families import PERCEPTUAL_HASH
from malle.retrieval.metrics import HAMMING

HASH_SIDE = 8  # imagehash's default hash_size: an 8x8 bit grid


class ImageHashDescriptor(Descriptor):
    family = PERCEPTUAL_HASH
    metric = HAMMING
    precision = "binary hash"
    licence = "BSD-2-Clause (ImageHash)"
    # phash needs scipy's DCT, whash PyWavelets; all of them resize with Pillow.
    packages = ("ImageHash", "Pillow", "numpy", "scipy", "PyWavelets")
    dim = HASH_SIDE * HASH_SIDE

    @abstractmethod
    def _hash_algo(self, image: Image.Image) -> imagehash.ImageHash:
        """The ImageHash function this method stands for."""

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._stack([self._pack(image)[None, :] for image in images])

    def _encode_paths(self, paths: Sequence[Path], batch_size: int, bar) -> np.ndarray:
        # Hashing is per image, so batch_size does not apply; files are decoded on the thread pool instead.
        return self._stack([code[None, :] for code in self._map_files(self._pack, paths, bar)])

    def runtime(self) -> str:
        return f"ImageHash (NumPy/SciPy), {self.file_workers} decoding threads"

    def fingerprint(self) -> dict:
        return {**self._base_fingerprint(), "hash_side": HASH_SIDE, "bit_order": "row-major packbits"}

    def _pack(self, image: Image.Image) -> np.ndarray:
        bits = self._hash_algo(image).hash.flatten()
        if bits.size != self.dim:
            raise ValueError(f"{self.name}: expected {self.dim} bits, got {bits.size}")
        return np.packbits(bits)


class PHash(ImageHashDescriptor):
    name = "phash"
    short_name = "pHash"
    label = "pHash (64-bit)"
    default = True

    def _hash_algo(self, image: Image.Image) -> imagehash.ImageHash:
        return imagehash.phash(image, hash_size=HASH_SIDE)


class DHash(ImageHashDescriptor):
    name = "dhash"
    short_name = "dHash"
    label = "dHash (64-bit)"

    def _hash_algo(self, image: Image.Image) -> imagehash.ImageHash:
        return imagehash.dhash(image, hash_size=HASH_SIDE)


class AHash(ImageHashDescriptor):
    name = "ahash"
    short_name = "aHash"
    label = "aHash (64-bit)"

    def _hash_algo(self, image: Image.Image) -> imagehash.ImageHash:
        return imagehash.average_hash(image, hash_size=HASH_SIDE)


class WHash(ImageHashDescriptor):
    name = "whash"
    short_name = "wHash"
    label = "wHash (64-bit, Haar)"

    def _hash_algo(self, image: Image.Image) -> imagehash.ImageHash:
        return imagehash.whash(image, hash_size=HASH_SIDE, mode="haar")

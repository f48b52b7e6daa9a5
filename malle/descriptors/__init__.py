"""Stage 3: encode images with one small contract (``Descriptor``).

CNN embeddings (ResNet-50, EfficientNet-Lite2) give L2-normalised float32
rows scored by cosine similarity; perceptual hashes (pHash, dHash, aHash,
wHash) give packed 64-bit codes scored by Hamming distance.
"""

from malle.descriptors.base import Descriptor, Unavailable, WeightsStatus, WeightsUnavailable
from malle.descriptors.registry import (
    DEFAULT_METHODS,
    DESCRIPTORS,
    available_methods,
    create_descriptor,
    descriptor_class,
    resolve_methods,
    weight_options,
)

__all__ = [
    "DEFAULT_METHODS",
    "DESCRIPTORS",
    "Descriptor",
    "Unavailable",
    "WeightsStatus",
    "WeightsUnavailable",
    "available_methods",
    "create_descriptor",
    "descriptor_class",
    "resolve_methods",
    "weight_options",
]

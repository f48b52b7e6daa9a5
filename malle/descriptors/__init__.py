"""Stage 3: encode images with one small contract (``Descriptor``).

CNN embeddings (ResNet-50, EfficientNet-Lite2) give L2-normalised float32
rows scored by cosine similarity; perceptual hashes (pHash, dHash, aHash,
wHash) give packed 64-bit codes scored by Hamming distance.
"""

from malle.descriptors.base import Descriptor, WeightsUnavailable
from malle.descriptors.cnn import ENV_RESNET50_WEIGHTS, resnet50_hub_checkpoint
from malle.descriptors.registry import (
    DEFAULT_METHODS,
    DESCRIPTORS,
    create_descriptor,
    resnet50_weights_available,
    resolve_methods,
)

__all__ = [
    "DEFAULT_METHODS",
    "DESCRIPTORS",
    "ENV_RESNET50_WEIGHTS",
    "Descriptor",
    "WeightsUnavailable",
    "create_descriptor",
    "resnet50_hub_checkpoint",
    "resnet50_weights_available",
    "resolve_methods",
]

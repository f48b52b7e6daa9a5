"""Stage 3: encode images with one small contract (``Descriptor``).

Copy-detection descriptors (SSCD and its student) and CNN embeddings (ResNet-50,
EfficientNet-Lite2) give L2-normalised float32 rows scored by cosine similarity; they
run on the engines of ``malle.inference``, chosen by its precision policy. Perceptual
hashes (pHash, PDQ, dHash, aHash, wHash) give packed bits scored by Hamming distance.
Each descriptor names its ``family`` (``families``) and, for the networks, its
preprocessing (``preprocess.PreprocessConfig``).
"""

from malle.descriptors.base import Descriptor, Unavailable, WeightsStatus, WeightsUnavailable
from malle.descriptors.families import Family
from malle.descriptors.registry import (
    DEFAULT_METHODS,
    DESCRIPTORS,
    MethodRegistry,
    available_methods,
    create_descriptor,
    descriptor_class,
    family_of,
    known_class,
    resolve_methods,
    weight_options,
)
from malle.inference.precision import PRECISIONS, check_precision

__all__ = [
    "DEFAULT_METHODS",
    "DESCRIPTORS",
    "Descriptor",
    "MethodRegistry",
    "Family",
    "PRECISIONS",
    "Unavailable",
    "WeightsStatus",
    "WeightsUnavailable",
    "available_methods",
    "check_precision",
    "create_descriptor",
    "descriptor_class",
    "family_of",
    "known_class",
    "resolve_methods",
    "weight_options",
]

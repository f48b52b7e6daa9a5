"""Name -> descriptor class, and choosing which methods a run can use.

ResNet-50 needs ImageNet weights that are not always on disk. A default run
skips it with one notice when they are missing; an explicit request keeps it
and ``Experiment.check`` loads (or downloads) them before any other work, so
a run never fails halfway or falls back to random weights silently.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from malle.descriptors.base import Descriptor
from malle.descriptors.cnn import (
    ENV_RESNET50_WEIGHTS,
    RANDOM_WEIGHTS,
    EfficientNetLite2,
    ResNet50,
    resnet50_hub_checkpoint,
)
from malle.descriptors.hashes import AHash, DHash, PHash, WHash

DESCRIPTORS: dict[str, type[Descriptor]] = {
    cls.name: cls for cls in (ResNet50, EfficientNetLite2, PHash, DHash, AHash, WHash)
}
DEFAULT_METHODS = ("resnet50", "efficientnet_lite2", "phash")


def create_descriptor(name: str, **options) -> Descriptor:
    """Instantiate by registry name; ``resnet50`` takes ``weights=`` (None, PATH or "random")."""
    cls = DESCRIPTORS.get(name)
    if cls is None:
        raise ValueError(unknown_names_message([name]))
    if cls is ResNet50:
        options["weights"] = resolve_resnet50_weights(options.get("weights"))
    return cls(**options)


def resolve_resnet50_weights(weights: str | Path | None) -> str | Path | None:
    """An explicit value wins; otherwise the MALLE_RESNET50_WEIGHTS env var; else None (torchvision)."""
    if weights is not None:
        return weights
    return os.environ.get(ENV_RESNET50_WEIGHTS) or None


def resnet50_weights_available(weights: str | Path | None = None) -> tuple[bool, str]:
    """Whether ResNet-50 weights are on disk now, without touching the network.

    Returns (available, where they come from or why not).
    """
    weights = resolve_resnet50_weights(weights)
    if weights == RANDOM_WEIGHTS:
        return True, "random weights (plumbing only)"
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return True, f"state dict {path}"
        return False, f"weights file {path} does not exist"
    hub = resnet50_hub_checkpoint()
    if hub.is_file():
        return True, f"torchvision cache {hub}"
    return False, f"no ImageNet weights found ({hub} is missing)"


def resolve_methods(
    requested: Sequence[str] | None, resnet50_weights: str | Path | None = None
) -> tuple[list[str], list[str]]:
    """(methods to run, notices for the user). Deduplicates, keeps order."""
    if requested is None:
        return default_methods(resnet50_weights)
    methods = list(dict.fromkeys(requested))
    if not methods:
        raise ValueError(f"no methods requested; valid names: {', '.join(DESCRIPTORS)}")
    unknown = [name for name in methods if name not in DESCRIPTORS]
    if unknown:
        raise ValueError(unknown_names_message(unknown))
    return methods, []


def default_methods(resnet50_weights: str | Path | None) -> tuple[list[str], list[str]]:
    available, reason = resnet50_weights_available(resnet50_weights)
    if available:
        return list(DEFAULT_METHODS), []
    notice = (
        f"ResNet-50 skipped: {reason}; pass --resnet50-weights PATH or run once online "
        "with --methods resnet50. Using EfficientNet-Lite2 as the CNN."
    )
    return [name for name in DEFAULT_METHODS if name != "resnet50"], [notice]


def unknown_names_message(names: Sequence[str]) -> str:
    return f"unknown method(s) {', '.join(map(repr, names))}; valid names: {', '.join(DESCRIPTORS)}"

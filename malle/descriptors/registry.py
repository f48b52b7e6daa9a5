"""Name -> descriptor class, and choosing which methods a run can use.

Every descriptor reports its own weights status. A default run leaves out the
methods whose weights cannot be had, each as one ``Unavailable`` record (method,
reason, how to fix); an explicit request keeps them, and ``Experiment.check``
loads their weights before any other work, so a run never fails halfway or
falls back to random weights silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from malle.descriptors.base import Descriptor, Unavailable
from malle.descriptors.cnn import EfficientNetLite2, ResNet50, check_precision
from malle.descriptors.hashes import AHash, DHash, PHash, WHash
from malle.descriptors.pdq import PDQ, PDQDihedral
from malle.descriptors.sscd import SSCD, SSCDDistilled
from malle.errors import ConfigError

DESCRIPTORS: dict[str, type[Descriptor]] = {
    cls.name: cls
    for cls in (SSCD, SSCDDistilled, ResNet50, EfficientNetLite2, PHash, PDQ, PDQDihedral, DHash, AHash, WHash)
}
DEFAULT_METHODS = tuple(name for name, cls in DESCRIPTORS.items() if cls.default)
WeightsMap = Mapping[str, "str | Path"]  # method -> weights file, for descriptors that take one


def descriptor_class(name: str) -> type[Descriptor]:
    cls = DESCRIPTORS.get(name)
    if cls is None:
        raise ConfigError(unknown_names_message([name]))
    return cls


def create_descriptor(name: str, weights: str | Path | None = None, precision: str = "auto") -> Descriptor:
    """Instantiate by registry name; ``weights`` (or the descriptor's environment variable) names its file.

    ``precision`` (auto, fp32, int8) applies to methods that offer a choice; the rest keep their own."""
    check_precision(precision)
    cls = descriptor_class(name)
    extra = {"precision": precision} if cls.precision_choice else {}
    return cls(weights=cls.resolve_weights(weights), **extra)


def weight_options() -> dict[str, type[Descriptor]]:
    """``--<name>-weights`` option name -> descriptor, for every descriptor that takes a weights file."""
    return {f"{name.replace('_', '-')}-weights": cls for name, cls in DESCRIPTORS.items() if cls.weights_env}


def resolve_methods(
    requested: Sequence[str] | None, weights: WeightsMap | None = None
) -> tuple[list[str], list[Unavailable]]:
    """(methods to run, default methods left out because they cannot run here). Deduplicates, keeps order."""
    weights = weights or {}
    if requested is None:
        unavailable = [u for name in DEFAULT_METHODS if (u := DESCRIPTORS[name].unavailable(weights.get(name)))]
        skipped = {u.method for u in unavailable}
        return [name for name in DEFAULT_METHODS if name not in skipped], unavailable
    methods = list(dict.fromkeys(requested))
    if not methods:
        raise ConfigError(f"no methods requested; valid names: {', '.join(DESCRIPTORS)}")
    unknown = [name for name in methods if name not in DESCRIPTORS]
    if unknown:
        raise ConfigError(unknown_names_message(unknown))
    return methods, []


def available_methods(weights: WeightsMap | None = None) -> list[str]:
    """Every method that can run here now."""
    weights = weights or {}
    return [name for name, cls in DESCRIPTORS.items() if cls.unavailable(weights.get(name)) is None]


def unknown_names_message(names: Sequence[str]) -> str:
    return f"unknown method(s) {', '.join(map(repr, names))}; valid names: {', '.join(DESCRIPTORS)}"

"""What an engine needs to know of a model, whichever engine runs it, and how preparing it can fail.

A ``Model`` is built by a descriptor (``malle.descriptors``) and handed to an engine
(``malle.inference.engines``): engines never import descriptors, the cache's default
location or the demo photos; they get the model folder and the calibration photos
as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Model:
    """One network: how to name it, build or find it, and feed it.

    Exactly one of ``build`` (a PyTorch module, exported to ONNX for the compiled engines)
    and ``shipped`` (an ONNX file that runs as it ships) is given.
    """

    name: str  # the method's name, for messages and the model folder's keys
    identity: Callable[[], str]  # what distinguishes these weights (may hash a file, so asked for when needed)
    input_shape: tuple[int, ...]  # one input with its batch axis: (1, 3, 260, 260), or (1, 288, 288, 3)
    prepare: Callable[[Path], np.ndarray]  # one photo file to one input, exactly as encoding prepares it
    build: Callable[[], torch.nn.Module] | None = None  # eval mode, channels_last
    shipped: Path | None = None
    stored: str = "fp32"  # what the weights are stored as: "int8" for a graph quantised before it shipped

    def __post_init__(self) -> None:
        if (self.build is None) == (self.shipped is None):
            raise ValueError(f"{self.name}: a model is either built in PyTorch or shipped as ONNX, not both or neither")

    @property
    def exportable(self) -> bool:
        """Built in PyTorch, so eager PyTorch can run it and the compiled engines export it."""
        return self.build is not None

    def module(self) -> torch.nn.Module:
        """The PyTorch module (only for an ``exportable`` model: the engines that need one run only those)."""
        if self.build is None:
            raise TypeError(f"{self.name} is not built in PyTorch: it ships as an ONNX graph")
        return self.build()


@dataclass(frozen=True)
class CalibrationSet:
    """Real photos an engine may calibrate on: named for cache keys, listed only when an engine calibrates."""

    name: str  # what the photos are, e.g. "ai-benchmark photos"
    photos: Callable[[], Sequence[Path]]  # sorted; raises CalibrationFailed when there are none


class ExportFailed(Exception):
    """The model could not be prepared for a compiled engine; the descriptor falls back to its exact engine."""

    stage = "ONNX export"


class CalibrationFailed(ExportFailed):
    """The int8 model could not be calibrated or quantised."""

    stage = "int8 calibration"


def first_line(err: BaseException) -> str:
    """``Type: first line``: compilers and quantisers explain themselves over many lines."""
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"

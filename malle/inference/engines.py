"""Inference engines: what runs a model's forward pass, behind one small contract.

Every engine is built the same way, ``Engine(model, calibration, threads)``, and offers
``name`` (the runtime), ``precision``, ``summary`` and ``describe()`` (for tables and cache
keys), ``load(folder)`` (export, quantise or compile into the model folder, open the
session; raises ``ExportFailed``) and ``run(batch)``: a prepared batch in, float32
features out. Which engine runs which model is decided in one place,
``malle.inference.precision``; a new engine is one class here plus one entry there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from malle.inference.cpu import cpu_features
from malle.inference.export import exporter, onnx_graph, torch_version
from malle.inference.model import CalibrationFailed, CalibrationSet, Model
from malle.inference.onnx import OnnxRunner, onnxruntime_version
from malle.inference.quantize import quantised, quantiser

if TYPE_CHECKING:
    import torch


class Engine(ABC):
    """Runs one model. Part of the cache key: engines agree only to within float error."""

    name: ClassVar[str]  # the runtime: "torch", "onnxruntime"
    summary: ClassVar[str]  # short, for tables: what runs the model
    runtime_label: ClassVar[str]  # the runtime as labels name it: "ONNX Runtime"
    # Images per forward pass. ONNX Runtime on 2 cores ran EfficientNet-Lite2 at 76 img/s in batches of 8
    # against 68 in batches of 32 (fp32; int8 161 vs 129): small batches keep activations in cache.
    batch: ClassVar[int] = 8

    def __init__(self, model: Model, calibration: CalibrationSet | None = None, threads: int | None = None) -> None:
        self.model = model
        self.calibration = calibration  # real photos, for engines that calibrate
        self.threads = threads  # None: the machine's share (malle.inference.onnx.default_threads)

    @property
    def precision(self) -> str:
        """What the model computes in, shown in labels."""
        return "fp32"

    @classmethod
    def runs(cls, model: Model) -> bool:
        """Whether this engine can run ``model`` at all."""
        return True

    @classmethod
    def installed(cls) -> bool:
        """Whether this engine's runtime is importable here (asked before its description enters a cache key)."""
        return True

    @abstractmethod
    def describe(self) -> str:
        """Everything about this engine that can change the codes, for cache keys. Cheap: loads nothing."""

    @abstractmethod
    def load(self, folder: Path) -> None:
        """Get ready to run, keeping derived models in ``folder``; raises ExportFailed when it cannot."""

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(n, ...) prepared inputs -> (n, dim) float32 features."""

    def path(self) -> str:
        """Runtime and precision, for labels: 'OpenVINO bf16'."""
        return f"{self.runtime_label} {self.precision}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model.name}: {self.summary}>"


class EagerTorch(Engine):
    """The PyTorch module as it is: the reference every compiled engine is checked against."""

    name = "torch"
    runtime_label = "PyTorch"
    summary = "PyTorch eager fp32"
    batch = 32

    def __init__(self, model: Model, calibration: CalibrationSet | None = None, threads: int | None = None) -> None:
        super().__init__(model, calibration, threads)
        self._module: torch.nn.Module | None = None

    @classmethod
    def runs(cls, model: Model) -> bool:
        return model.exportable

    def describe(self) -> str:
        return f"torch {torch_version()} eager, fp32, channels_last"

    def load(self, folder: Path) -> None:
        if self._module is None:
            self._module = self.model.module()

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch  # only the eager engine runs PyTorch in this process; the others need not import it

        with torch.inference_mode():
            inputs = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            assert self._module is not None, "load() comes before run()"
            return self._module(inputs).float().numpy()


class OnnxRuntimeEngine(Engine):
    """An ONNX graph on ONNX Runtime's CPU provider; subclasses say which graph."""

    name = "onnxruntime"
    runtime_label = "ONNX Runtime"

    def __init__(self, model: Model, calibration: CalibrationSet | None = None, threads: int | None = None) -> None:
        super().__init__(model, calibration, threads)
        self.runner: OnnxRunner | None = None

    @abstractmethod
    def graph(self, folder: Path) -> Path:
        """The ONNX file to run, made in ``folder`` if it has to be."""

    def load(self, folder: Path) -> None:
        if self.runner is None:
            self.runner = OnnxRunner(self.graph(folder), self.threads)
        self.runner.session  # noqa: B018  (open now: a bad model fails before anything is decoded)

    def run(self, batch: np.ndarray) -> np.ndarray:
        assert self.runner is not None, "load() comes before run()"
        return self.runner.run(batch)


class OnnxRuntimeFp32(OnnxRuntimeEngine):
    """The model's own graph: exported once from PyTorch (about 2x eager on 2 cores, embeddings within
    cosine 0.99999 of eager; tests check 0.9999), or the ONNX file it ships as, run as it is."""

    summary = "ONNX Runtime fp32"

    @property
    def precision(self) -> str:
        # A float graph with fp16 weights still computes in fp32; a QDQ int8 graph runs in int8 as it shipped.
        return "int8 as shipped" if self.model.stored == "int8" else "fp32"

    def describe(self) -> str:
        if self.model.exportable:
            return f"onnxruntime {onnxruntime_version()} fp32, {exporter()}"
        return f"onnxruntime {onnxruntime_version()}, the graph as shipped"

    def graph(self, folder: Path) -> Path:
        return onnx_graph(self.model, folder)


class OnnxRuntimeInt8(OnnxRuntimeEngine):
    """The exported graph quantised to int8 by ONNX Runtime, calibrated on the photos it is given
    (``malle.inference.quantize``)."""

    precision = "int8"
    summary = "ONNX Runtime int8 (static, calibrated)"

    @classmethod
    def runs(cls, model: Model) -> bool:
        return model.exportable

    def describe(self) -> str:
        # The CPU is part of it: int8 kernels with and without VNNI accumulate differently.
        source = OnnxRuntimeFp32(self.model).describe()
        return f"{quantiser(self.calibration)}, from {source}, on {cpu_features().describe()}"

    def graph(self, folder: Path) -> Path:
        if self.calibration is None:
            raise CalibrationFailed("no calibration photos were given")
        return quantised(self.model, onnx_graph(self.model, folder), self.calibration, self.describe())

"""OpenVINO engines: the model's ONNX graph compiled for this CPU, in f32, bf16, or int8 quantised by NNCF.

- f32 sets ``INFERENCE_PRECISION_HINT`` to ``f32`` explicitly: OpenVINO's default on a CPU with bf16 is bf16,
  which would silently change "fp32" codes.
- bf16 is where AMX pays: on an Intel Xeon with AMX it ran EfficientNet-Lite2 and the SSCD student about
  twice OpenVINO f32 and three times ONNX Runtime fp32 (bench/results/encode_speed.md).
- int8 comes from NNCF's post-training quantisation of the fp32 graph, calibrated on real photos and kept in
  the model folder under the model's identity, the photos and the NNCF version: quantised once, then loaded.
  OpenVINO cannot read ONNX Runtime's QOperator int8 graphs, so this starts from the fp32 graph.
- A graph already quantised before it shipped (SSCD's QDQ int8) runs as it is: OpenVINO executes QDQ in int8.

Whether OpenVINO is there is asked through ``runtime`` (a class attribute), so a test can give an engine
whose import fails without touching the model.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from malle.inference.engines import Engine
from malle.inference.export import exporter, onnx_graph
from malle.inference.model import CalibrationFailed, ExportFailed, first_line
from malle.inference.onnx import default_threads
from malle.inference.quantize import calibration_batches, quiet_quantiser
from malle.io import cache

INT8_GRAPH = "model.xml"  # OpenVINO's IR, with its weights in model.bin next to it
# Calibration photos for NNCF: about 300 real photos kept R@1 within 0.0025 where this was measured; the
# demo has 100, all of which are used. Fewer than the minimum would calibrate on too little.
NNCF_PHOTOS, NNCF_MIN_PHOTOS = 300, 64


class CompileFailed(ExportFailed):
    """OpenVINO could not compile the graph for this CPU."""

    stage = "OpenVINO compile"


class EngineMissing(ExportFailed):
    """The engine's runtime is not installed: the descriptor falls back to the exact engine."""

    stage = "loading OpenVINO"


def import_openvino() -> ModuleType:
    import openvino

    return openvino


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class OpenVinoEngine(Engine):
    """An ONNX graph compiled by OpenVINO for the CPU with one inference precision hint."""

    name = "openvino"
    runtime_label = "OpenVINO"
    hint: ClassVar[str]  # OpenVINO's INFERENCE_PRECISION_HINT: "f32" or "bf16"
    computes: ClassVar[str]  # the precision it runs a float graph in
    runtime: ClassVar = staticmethod(import_openvino)  # replaceable: how the engine finds OpenVINO

    def __init__(self, model, calibration=None, threads=None) -> None:
        super().__init__(model, calibration, threads)
        self._compiled: Any = None  # OpenVINO's CompiledModel, once loaded
        # Calling a compiled model uses its one default infer request, which two threads must not share (the
        # dashboard's sessions and its background work use one descriptor); ONNX Runtime's run is thread-safe.
        self._running = threading.Lock()

    @classmethod
    def runs(cls, model) -> bool:
        """bf16 and int8 start from a float graph; a graph quantised before it shipped runs only as it is."""
        return model.stored != "int8" or cls.hint == "f32"

    @classmethod
    def installed(cls) -> bool:
        try:
            cls.runtime()
        except ImportError:
            return False
        return True

    @property
    def precision(self) -> str:
        return "int8 as shipped" if self.model.stored == "int8" else self.computes

    def describe(self) -> str:
        return f"openvino {package_version('openvino')} {self.hint} on CPU, from {self.source_describe()}"

    def source_describe(self) -> str:
        return exporter() if self.model.exportable else "the graph as shipped"

    def graph(self, folder: Path) -> Path:
        """The file OpenVINO reads: the ONNX graph (as shipped or exported)."""
        return onnx_graph(self.model, folder)

    def load(self, folder: Path) -> None:
        if self._compiled is not None:
            return
        try:
            ov = self.runtime()
        except ImportError as err:
            raise EngineMissing(f"{first_line(err)}; pip install openvino") from None
        graph = self.graph(folder)
        config = {"INFERENCE_PRECISION_HINT": self.hint, "INFERENCE_NUM_THREADS": self.threads or default_threads(),
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            self._compiled = ov.Core().compile_model(str(graph), "CPU", config)
        except RuntimeError as err:  # OpenVINO reports unsupported graphs and settings as RuntimeError
            raise CompileFailed(f"OpenVINO cannot compile {graph.name}: {first_line(err)}") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._running:
            out = self._compiled(batch)[self._compiled.output(0)]
            return np.array(out, dtype=np.float32)  # a copy: OpenVINO reuses its output buffer on the next call


class OpenVinoFp32(OpenVinoEngine):
    """Exact within float error: f32 throughout (measured cosine to ONNX Runtime fp32 >= 0.9999)."""

    hint = "f32"
    computes = "fp32"
    summary = "OpenVINO fp32"


class OpenVinoBf16(OpenVinoEngine):
    """bf16 matrix maths (AMX or AVX-512 BF16), f32 accumulation."""

    hint = "bf16"
    computes = "bf16"
    summary = "OpenVINO bf16"


class OpenVinoInt8(OpenVinoEngine):
    """The fp32 graph quantised by NNCF (post-training, calibrated on real photos), run with f32 elsewhere."""

    hint = "f32"
    computes = "int8"
    summary = "OpenVINO int8 (NNCF, calibrated)"

    @classmethod
    def runs(cls, model) -> bool:
        return model.stored != "int8"

    def describe(self) -> str:
        photos = self.calibration.name if self.calibration else "photos (none given)"
        return (f"openvino {package_version('openvino')} int8 by nncf {package_version('nncf')} calibrated on "
                f"up to {NNCF_PHOTOS} {photos}, from {self.source_describe()}")

    def graph(self, folder: Path) -> Path:
        if self.calibration is None:
            raise CalibrationFailed("no calibration photos were given")
        source = onnx_graph(self.model, folder)
        target = Path(folder) / cache.fingerprint(self.model.name, self.model.identity(), self.describe())
        cache.obtain(target, lambda tmp, meta: self.quantise(source, tmp, meta))
        return target / INT8_GRAPH

    def quantise(self, source: Path, tmp: Path, meta: dict) -> None:
        assert self.calibration is not None, "an int8 engine is given photos to calibrate on"
        photos = list(self.calibration.photos())[:NNCF_PHOTOS]
        if len(photos) < NNCF_MIN_PHOTOS:
            raise CalibrationFailed(f"only {len(photos)} calibration photos, need {NNCF_MIN_PHOTOS}")
        try:
            import nncf

            ov = self.runtime()
            batches = calibration_batches(self.model, photos)
            with quiet_quantiser():
                nncf.set_log_level(logging.ERROR)  # its progress notes are for model authors
                quantised = nncf.quantize(ov.Core().read_model(str(source)), nncf.Dataset(batches),
                                          subset_size=len(photos))
            ov.save_model(quantised, str(tmp / INT8_GRAPH), compress_to_fp16=False)
        except ImportError as err:
            raise EngineMissing(f"{first_line(err)}; pip install openvino nncf") from None
        except (RuntimeError, ValueError, TypeError) as err:  # NNCF's reports on graphs it cannot quantise
            raise CalibrationFailed(first_line(err)) from None
        meta.update(method=self.model.name, engine=self.describe(), items=1, photos=len(photos))

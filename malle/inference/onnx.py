"""A small reusable ONNX Runtime runner: one session on the CPU provider, its threads set explicitly.

Sessions run on the CPU provider with their thread count set explicitly (the
machine's cores unless told otherwise): ONNX Runtime's own default can spin
more threads than there are cores when other work shares the machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from pathlib import Path

import numpy as np

from malle.errors import WeightsUnavailable


def onnxruntime_version() -> str:
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def default_threads() -> int:
    """The machine's cores, or fewer where a scheduler says so: Ray, like OpenMP, sets OMP_NUM_THREADS to the
    CPUs it gave a worker, and os.cpu_count() would oversubscribe them."""
    try:
        allotted = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        allotted = 0
    return allotted if allotted > 0 else os.cpu_count() or 1


class OnnxRunner:
    """Runs one ONNX model on batches of prepared inputs; the session is created on first use."""

    def __init__(self, model: Path, threads: int | None = None):
        self.model = Path(model)
        self.threads = threads or default_threads()
        self._session = None
        self._lock = threading.Lock()

    @property
    def session(self):
        with self._lock:
            if self._session is None:
                self._session = self._open()
            return self._session

    def _open(self):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise WeightsUnavailable(f"onnxruntime is not installed ({err}); pip install onnxruntime") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: graph clean-up notes are for model authors, not users
        try:
            return ort.InferenceSession(str(self.model), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile types
            raise WeightsUnavailable(f"ONNX model {self.model} cannot be loaded ({type(err).__name__}: {err})") \
                from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        session = self.session
        name = session.get_inputs()[0].name
        return session.run(None, {name: batch})[0]

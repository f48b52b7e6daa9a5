"""A small reusable ONNX Runtime runner: one session, batching, pipelined preprocessing, progress.

Sessions run on the CPU provider with their thread count set explicitly (the
machine's cores unless told otherwise): ONNX Runtime's own default can spin
more threads than there are cores when other work shares the machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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

    def run_pipelined(self, items: Sequence[Any], prepare: Callable[[Sequence[Any]], list[np.ndarray]],
                      batch_size: int, on_batch: Callable[[int], None] = lambda n: None) -> list[np.ndarray]:
        """``prepare`` batch i+1 on a worker thread while the model runs batch i.

        ``prepare`` turns a slice of ``items`` into one or more arrays that can each be
        run as a batch (inputs of different shapes cannot share one). Outputs keep the
        order of ``items``.
        """
        self.session  # open (and fail on a bad model) before decoding anything
        slices = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
        outputs: list[np.ndarray] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-prep") as worker:
            upcoming = worker.submit(prepare, slices[0]) if slices else None
            for index, part in enumerate(slices):
                arrays = upcoming.result()
                if index + 1 < len(slices):
                    upcoming = worker.submit(prepare, slices[index + 1])
                outputs += [self.run(array) for array in arrays]
                on_batch(len(part))
        return outputs

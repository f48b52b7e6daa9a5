"""A model's ONNX graph: the file it ships as, or its PyTorch module exported once and kept in the model folder."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import re
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from malle import parallel
from malle.inference.model import ExportFailed, Model, first_line
from malle.io import cache

if TYPE_CHECKING:
    import torch

OPSET = 17
GRAPH = "model.onnx"  # the file name of every graph kept in the model folder


def exporter() -> str:
    """What writes the graph, for cache keys and labels."""
    return f"exported by torch {torch_version()} opset {OPSET}"


def torch_version() -> str:
    """``torch.__version__`` (local label included: ``2.14.1+cu130``), read from the installed package's
    ``version.py`` when PyTorch is not imported yet: importing it to read one string costs seconds."""
    if "torch" in sys.modules:
        return str(sys.modules["torch"].__version__)
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise ExportFailed("PyTorch is not installed")
    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", (Path(spec.origin).parent / "version.py").read_text(),
                      re.MULTILINE)
    return found.group(1) if found else version("torch")


def onnx_graph(model: Model, folder: Path) -> Path:
    """The model's fp32 ONNX graph: as shipped, or exported into ``folder`` once per weights and exporter."""
    if model.shipped is not None:
        return model.shipped
    return exported(model, folder)


def exported(model: Model, folder: Path) -> Path:
    """The export, kept in ``folder`` under the weights, the exporter and the input size."""
    target = Path(folder) / cache.fingerprint(model.name, model.identity(), exporter(), model.input_shape[-1])
    cache.obtain(target, lambda tmp, meta: export(model, tmp / GRAPH, meta))
    return target / GRAPH


def export(model: Model, path: Path, meta: dict) -> None:
    """Write ``model``'s graph to ``path`` with a dynamic batch axis (input ``image``, output ``features``), in a
    worker of the pool: it holds PyTorch already, and this process need not import it (``parallel.in_worker``)."""
    if model.build is None:
        raise TypeError(f"{model.name} is not built in PyTorch: it ships as an ONNX graph")
    parallel.in_worker(write_graph, model.build, model.input_shape, path)
    meta.update(method=model.name, engine=exporter(), items=1)


def write_graph(build: Callable[[], torch.nn.Module], input_shape: tuple[int, ...], path: Path) -> None:
    """The export itself: ``build()``'s module traced on zeros of ``input_shape``; raises ``ExportFailed``."""
    import torch

    module = copy.deepcopy(build()).to(memory_format=torch.contiguous_format)
    example = torch.zeros(*input_shape)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's notes are for model authors, not users
            torch.onnx.export(module, (example,), str(path), input_names=["image"], output_names=["features"],
                              dynamic_axes={"image": {0: "n"}, "features": {0: "n"}}, opset_version=OPSET,
                              dynamo=False)
    except (ImportError, RuntimeError, ValueError, TypeError, torch.onnx.errors.OnnxExporterError) as err:
        raise ExportFailed(first_line(err)) from err

"""A model's ONNX graph: the file it ships as, or its PyTorch module exported once and kept in the model folder."""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import torch

from malle.inference.model import ExportFailed, Model, first_line
from malle.io import cache

OPSET = 17
GRAPH = "model.onnx"  # the file name of every graph kept in the model folder


def exporter() -> str:
    """What writes the graph, for cache keys and labels."""
    return f"exported by torch {torch.__version__} opset {OPSET}"


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
    """Write ``model``'s graph to ``path`` with a dynamic batch axis (input ``image``, output ``features``)."""
    module = copy.deepcopy(model.module()).to(memory_format=torch.contiguous_format)
    example = torch.zeros(*model.input_shape)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's notes are for model authors, not users
            torch.onnx.export(module, (example,), str(path), input_names=["image"], output_names=["features"],
                              dynamic_axes={"image": {0: "n"}, "features": {0: "n"}}, opset_version=OPSET,
                              dynamo=False)
    except (ImportError, RuntimeError, ValueError, TypeError, torch.onnx.errors.OnnxExporterError) as err:
        raise ExportFailed(first_line(err)) from err
    meta.update(method=model.name, engine=exporter(), items=1)

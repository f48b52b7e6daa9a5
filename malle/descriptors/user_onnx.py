"""A user's own ONNX model as a method: a ``Descriptor`` class made from a spec file (``onnx_spec``).

``load_method(path)`` reads the spec, opens the model, runs it once on a blank image and checks
that what comes out fits the metric, all before any work: a bad spec or model is one
``ConfigError`` line naming the key or the problem. The class it returns has the spec's name; its
label says it is a user model and gives a short SHA-256 of the model file; the file's digest and
the spec's settings are part of every cache key (``fingerprint``).

Preprocessing matches the built-in SSCD descriptors step for step (Pillow resize of the decoded
RGB image, uint8 HWC rows, batches of up to 16 stacked by shape, the output L2-normalised), so a
spec of the packaged SSCD student gives the built-in ``sscd_distilled``'s codes bit for bit.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from malle.descriptors.base import Descriptor, WeightsStatus, file_identity, open_progress, weights_identity
from malle.descriptors.onnx_spec import OnnxSpec, read_spec
from malle.descriptors.sscd import BATCH, same_shape_batches
from malle.errors import ConfigError, WeightsUnavailable
from malle.inference.onnx import OnnxRunner, onnxruntime_version
from malle.inference.pipeline import pipelined
from malle.io import cache
from malle.io.images import load_rgb

FAMILY = "user ONNX model"
# Data types of ONNX initialisers (onnx.TensorProto) that hold weights, by the word a label uses for them;
# int32 and int64 initialisers are shapes, indices or a quantised model's biases, not its weights.
STORED_PRECISION = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64", 3: "int8", 2: "uint8"}


# -- the model, checked once before any work -------------------------------------------------------
@dataclass(frozen=True)
class ModelFacts:
    digest: str  # SHA-256 of the model file
    input_name: str
    output_name: str
    width: int  # values per image in the chosen output
    precision: str  # what its weights are stored as


def inspect_model(spec: OnnxSpec) -> ModelFacts:
    """Open the model, check its input against the layout, run it on one blank image and check the output."""
    session = _open_session(spec)
    image_input = _image_input(spec, session)
    output = _chosen_output(spec, session)
    probe = spec.prepare(Image.new("RGB", (spec.resize.size, spec.resize.size)))[None]
    try:
        result = np.asarray(session.run([output], {image_input: probe})[0])
    except Exception as err:  # onnxruntime raises its own pybind11 error types
        raise spec_error(spec, f"the model cannot run on a {probe.dtype} batch of shape {probe.shape} "
                               f"({one_line(err)})") from None
    if result.ndim != 2 or result.shape[0] != 1:
        raise spec_error(spec, f"output {output!r} has shape {result.shape} for one image; a method needs one "
                               "vector per image, shaped (batch, dim)")
    if (wrong := spec.codes.problem(result)) is not None:
        raise spec_error(spec, wrong)
    return ModelFacts(cache.file_digest(spec.onnx), image_input, output, result.shape[1], stored_precision(spec.onnx))


def spec_error(spec: OnnxSpec, problem: str) -> ConfigError:
    return ConfigError(f"method spec {spec.path}: {problem}")


def _open_session(spec: OnnxSpec):
    if not spec.onnx.is_file():
        raise spec_error(spec, f"onnx model {spec.onnx} not found")
    if importlib.util.find_spec("onnxruntime") is None:
        raise spec_error(spec, "ONNX models need the package onnxruntime: pip install onnxruntime")
    try:
        return OnnxRunner(spec.onnx, threads=1).session
    except WeightsUnavailable as err:
        raise spec_error(spec, one_line(err)) from None


def _image_input(spec: OnnxSpec, session) -> str:
    """The name of the model's one input, once it is known to take what the layout and resize give."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise spec_error(spec, f"the model takes {len(inputs)} inputs; a method's model takes one batch of images")
    first, layout = inputs[0], spec.layout
    if first.type != layout.input_type or len(first.shape) != 4:
        raise spec_error(spec, f"layout = {layout.name!r} feeds a 4-d {layout.input_type}, but the model's input "
                               f"{first.name!r} is a {len(first.shape)}-d {first.type}")
    if spec.resize.varies and any(isinstance(d, int) for d in first.shape[layout.spatial]):
        raise spec_error(spec, f"resize = \"short_side\" gives each image its own shape, but the model's input is "
                               f"fixed at {first.shape}; use square or short_side_crop")
    return first.name


def _chosen_output(spec: OnnxSpec, session) -> str:
    outputs = [o.name for o in session.get_outputs()]
    if spec.output is None and len(outputs) > 1:
        raise spec_error(spec, f"the model has several outputs ({', '.join(outputs)}); name one with output = \"...\"")
    output = spec.output or outputs[0]
    if output not in outputs:
        raise spec_error(spec, f"output {output!r} is not one of the model's outputs ({', '.join(outputs)})")
    return output


def stored_precision(model: Path) -> str:
    """The data type that holds most of the model's weights ('fp16 weights'), read from its initialisers."""
    import onnx  # here, not at the top: only specs need it, and it is slow to import
    from google.protobuf.message import DecodeError

    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except (OSError, ValueError, DecodeError):
        return "weights of unknown precision"  # ONNX Runtime opened it (an .ort file, say); onnx cannot
    counts: Counter[str] = Counter()
    for tensor in graph.initializer:
        if tensor.data_type in STORED_PRECISION:
            counts[STORED_PRECISION[tensor.data_type]] += math.prod(tensor.dims)
    return f"{counts.most_common(1)[0][0]} weights" if counts else "no stored weights"


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:400]


# -- the method -----------------------------------------------------------------------------------
class UserOnnx(Descriptor):
    """A user's ONNX model; ``method_class`` makes one subclass per spec, with its name, label and model facts."""

    family = FAMILY
    packages = ("onnxruntime", "numpy", "Pillow")
    licence = "the model owner's (not known to Malle)"
    spec: ClassVar[OnnxSpec]
    facts: ClassVar[ModelFacts]

    def __init__(self, weights: str | Path | None = None, threads: int | None = None) -> None:
        super().__init__(weights)
        self.threads = threads
        self._runner: OnnxRunner | None = None

    @classmethod
    def weights_status(cls, weights: str | Path | None = None) -> WeightsStatus:
        if importlib.util.find_spec("onnxruntime") is None:
            return WeightsStatus(False, "the package onnxruntime is not installed", "pip install onnxruntime")
        if not cls.spec.onnx.is_file():
            return WeightsStatus(False, f"its model file {cls.spec.onnx} is missing", f"fix onnx in {cls.spec.path}")
        return WeightsStatus(True, f"user ONNX model {cls.spec.onnx}")

    @property
    def runner(self) -> OnnxRunner:
        if self._runner is None:
            status = self.weights_status()
            if not status.available:
                raise WeightsUnavailable(f"{self.label}: {status.source}. {status.fix}")
            self._runner = OnnxRunner(self.spec.onnx, self.threads)
        return self._runner

    def load(self) -> None:
        self.runner.session  # noqa: B018  (opening the session is the point)

    def runtime(self) -> str:
        return f"ONNX Runtime {onnxruntime_version()}, a user's model as given ({self.precision})"

    def fingerprint(self) -> dict:
        return {**self._base_fingerprint(), "model": weights_identity(self.spec.onnx, self.digest_memo),
                "spec": self.spec.settings(), "onnxruntime": onnxruntime_version()}

    def encode(self, images: Sequence[Image.Image], batch_size: int = BATCH) -> np.ndarray:
        return self._run(images, self.spec.prepare, batch_size, open_progress(None, 0, ""))

    def _encode_paths(self, paths: Sequence[Path], batch_size: int, bar) -> np.ndarray:
        return self._run(paths, lambda path: self.spec.prepare(load_rgb(path)), min(batch_size, BATCH), bar)

    def _run(self, items: Sequence, prepare_one: Callable[[Any], np.ndarray], batch_size: int, bar) -> np.ndarray:
        session = self.runner.session  # open, and fail on a bad model, before decoding anything
        facts = self.facts

        def infer(arrays: list[np.ndarray]) -> list[np.ndarray]:
            return [self._checked(session.run([facts.output_name], {facts.input_name: batch})[0], batch.shape)
                    for batch in same_shape_batches(arrays)]

        outputs = pipelined(items, batch_size, prepare_one, infer, bar.update)
        flat = [array for batch in outputs for array in batch]
        return self.spec.codes.codes(np.concatenate(flat)) if flat else self.empty_codes()

    def _checked(self, output: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        # The probe saw one square image; with short_side every shape is new, and a model without global
        # pooling gives as many values as the image has pixels.
        if output.ndim != 2 or output.shape[1] != self.facts.width:
            raise ConfigError(f"{self.name}: the model gives {output.shape[1:]} values for an input batch of shape "
                              f"{shape}, not {self.facts.width}; with resize = \"short_side\" its output must not "
                              "depend on the image's size")
        return output


def method_class(spec: OnnxSpec, facts: ModelFacts) -> type[UserOnnx]:
    shape = spec.codes.describe(facts.width)
    return type(f"UserOnnx[{spec.name}]", (UserOnnx,), {
        "__module__": __name__,
        "name": spec.name,
        "spec": spec,
        "facts": facts,
        "dim": spec.codes.dim(facts.width),
        "metric": spec.codes.metric,
        "precision": facts.precision,
        "label": f"{spec.name} (user ONNX model {spec.onnx.name}, sha256 {facts.digest[:12]}, {facts.precision}, "
                 f"{shape})",
        "weights_source": f"user ONNX model {spec.onnx} (sha256 {facts.digest}), described by {spec.path}",
    })


# Spec file -> (identities of the spec and its model when read, the class made for them): a spec is read,
# and its model opened and run, once per process until one of the two files changes.
_LOADED: dict[Path, tuple[tuple[str, str], type[UserOnnx]]] = {}
_LOADED_LOCK = threading.Lock()


def load_method(path: str | Path) -> type[UserOnnx]:
    """The ``Descriptor`` class a spec file describes, fully checked; a bad spec is one ConfigError line."""
    key = Path(path).expanduser().resolve()
    with _LOADED_LOCK:
        known = _LOADED.get(key)
    if known is not None and known[0] == _identities(known[1].spec):
        return known[1]
    spec_identity = _identity(key)
    spec = read_spec(path)
    identities = (spec_identity, _identity(spec.onnx))
    cls = method_class(spec, inspect_model(spec))
    with _LOADED_LOCK:
        _LOADED[key] = (identities, cls)
    return cls


def _identities(spec: OnnxSpec) -> tuple[str, str]:
    return _identity(spec.path), _identity(spec.onnx)


def _identity(path: Path) -> str:
    try:
        return file_identity(path)
    except OSError:
        return "missing"

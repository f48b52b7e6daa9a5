"""int8 models by ONNX Runtime's static quantiser, calibrated on real photos and kept in the model folder.

Static quantisation, u8 activations and s8 per-channel weights, activation ranges calibrated
(min-max) on real photos through the model's own preprocessing. The QOperator form (fused
QLinearConv) measured 1.25x the QDQ form here; on CPUs with VNNI it runs about 2x the fp32 model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from malle.inference.export import GRAPH
from malle.inference.model import CalibrationFailed, CalibrationSet, Model, first_line
from malle.inference.onnx import onnxruntime_version
from malle.io import cache

CALIBRATION_IMAGES = 64
CALIBRATION_BATCH = 8
# The quantiser reports an unsupported graph with whatever it trips on, assertions and attributes included.
QUANTISER_ERRORS = (ImportError, RuntimeError, ValueError, TypeError, OSError, AssertionError, AttributeError)


def quantiser(calibration: CalibrationSet | None) -> str:
    """What makes the int8 model, for cache keys (the engine adds its source graph and the CPU)."""
    photos = calibration.name if calibration else "photos (none given)"
    return (f"onnxruntime {onnxruntime_version()} int8 static QOperator u8s8 per-channel, min-max calibrated on "
            f"{CALIBRATION_IMAGES} {photos}")


def quantised(model: Model, fp32: Path, calibration: CalibrationSet, describe: str) -> Path:
    """The int8 model next to its fp32 graph ``fp32``, quantised once per graph and ``describe`` (the
    engine's full description: quantiser, source graph and CPU)."""
    folder = fp32.parent.parent / cache.fingerprint(fp32.parent.name, describe)
    cache.obtain(folder, lambda tmp, meta: quantise(model, fp32, calibration, tmp, meta, describe))
    return folder / GRAPH


def quantise(model: Model, fp32: Path, calibration: CalibrationSet, tmp: Path, meta: dict, describe: str) -> None:
    batches = calibration_batches(model, calibration_photos(calibration))
    # The quantiser trips on some exported graphs: ResNet-50's as exported (a bias it cannot find), and
    # EfficientNet-Lite2's once quant_pre_process has folded it. Each gets the form it accepts.
    failures = []
    for prepare in (False, True):
        try:
            quantise_once(fp32, tmp, batches, prepare)
        except QUANTISER_ERRORS as err:
            failures.append(first_line(err))
            continue
        for scratch in [*tmp.glob("*-inferred.onnx"), tmp / "prepared.onnx"]:
            scratch.unlink(missing_ok=True)  # the quantiser's intermediates
        meta.update(method=model.name, engine=describe, items=1, pre_processed=prepare)
        return
    raise CalibrationFailed("; ".join(failures))


def quantise_once(fp32: Path, tmp: Path, batches: list[np.ndarray], prepare: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = fp32
    with quiet_quantiser():
        if prepare:
            source = tmp / "prepared.onnx"
            quant_pre_process(str(fp32), str(source), skip_symbolic_shape=True)
        quantize_static(str(source), str(tmp / GRAPH), CalibrationFeed(batches),
                        quant_format=QuantFormat.QOperator, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)


def calibration_photos(calibration: CalibrationSet) -> list[Path]:
    """The first CALIBRATION_IMAGES photos of the set."""
    photos = list(calibration.photos())
    if len(photos) < CALIBRATION_IMAGES:
        raise CalibrationFailed(f"only {len(photos)} calibration photos, need {CALIBRATION_IMAGES}")
    return photos[:CALIBRATION_IMAGES]


def calibration_batches(model: Model, photos: Sequence[Path]) -> list[np.ndarray]:
    arrays = [model.prepare(path) for path in photos]
    step = CALIBRATION_BATCH
    return [np.stack(arrays[i : i + step]) for i in range(0, len(arrays), step)]


@contextlib.contextmanager
def quiet_quantiser():
    """ONNX Runtime's quantiser prints and logs (root logger) notes meant for model authors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


class CalibrationFeed:
    """ONNX Runtime's calibration reader protocol over prepared batches (input name ``image``)."""

    def __init__(self, batches: list[np.ndarray]):
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"image": batch}

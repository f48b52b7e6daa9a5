"""The one place that decides which engine runs a model: the precision and engine a user asks for, the CPU,
and what has been measured.

- An explicit precision runs its engine (``ASKED``, keyed by engine and precision); with ``--engine auto``
  ONNX Runtime where it offers the precision, else OpenVINO.
- ``auto`` takes the fastest path that ``choices.toml`` lists for that model and this CPU's kind
  (``CpuFeatures.kind``) that qualifies: faster than exact fp32 in the same run, instance R@1 within
  ``MAX_R1_DROP`` of exact fp32 on real photos and a cosine to it of at least ``MIN_COSINE``. Each entry says
  where it was measured. Otherwise, and on a kind with no entry at all (no guess from another kind), it runs
  the exact engine.
- When an engine cannot be prepared (its runtime is missing, an export or a calibration fails), the model
  runs on the exact engine instead, with one notice; if that is what failed, a model built in PyTorch runs
  eagerly (``fallback_engine``).

A new engine is one class (``malle.inference.engines`` or a module beside it) plus its entries here.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from malle.errors import ConfigError
from malle.inference.cpu import KINDS, CpuFeatures, cpu_features
from malle.inference.engines import EagerTorch, Engine, OnnxRuntimeFp32, OnnxRuntimeInt8
from malle.inference.model import ExportFailed, Model
from malle.inference.openvino_engines import OpenVinoBf16, OpenVinoFp32, OpenVinoInt8

PRECISIONS = ("auto", "fp32", "bf16", "int8")  # what a user may ask for; auto picks per model and CPU
ENGINES = ("auto", "onnxruntime", "openvino")  # which runtime; auto: per model and CPU, or the one with the precision
ASKED: dict[tuple[str, str], type[Engine]] = {
    ("onnxruntime", "fp32"): OnnxRuntimeFp32,
    ("onnxruntime", "int8"): OnnxRuntimeInt8,
    ("openvino", "fp32"): OpenVinoFp32,
    ("openvino", "bf16"): OpenVinoBf16,
    ("openvino", "int8"): OpenVinoInt8,
}
EXACT: type[Engine] = OnnxRuntimeFp32  # what auto runs when no faster path qualifies, and what failures fall to
FALLBACK: type[Engine] = EagerTorch  # when the exact engine itself cannot be prepared
CHOICES = Path(__file__).with_name("choices.toml")
MAX_R1_DROP = 0.005  # instance R@1 may be at most this much below exact fp32's
MIN_COSINE = 0.95  # and every embedding at least this close to exact fp32's (int8 CNNs measured 0.9585)


@dataclass(frozen=True)
class FasterPath:
    """One measured path ``auto`` may take for one model, on CPUs of one kind."""

    model: str  # the method's name
    cpu: str  # CpuFeatures.kind it was measured on
    engine: str  # ENGINES
    precision: str
    speed: float  # forward images/s over exact fp32's, same run
    min_cosine: float
    r1_delta: float
    measured: str  # where and when

    @property
    def kind(self) -> type[Engine]:
        return ASKED[self.engine, self.precision]

    @property
    def qualifies(self) -> bool:
        """Faster than exact fp32 where it was measured, and faithful to it."""
        return self.speed > 1.0 and self.r1_delta >= -MAX_R1_DROP and self.min_cosine >= MIN_COSINE


@functools.cache
def auto_paths(path: Path = CHOICES) -> tuple[FasterPath, ...]:
    """The choice table, checked: every entry names a known engine and precision, and a known CPU kind."""
    entries = tomllib.loads(path.read_text())["path"]
    paths = tuple(FasterPath(**entry) for entry in entries)
    unknown = [p for p in paths if (p.engine, p.precision) not in ASKED]
    if unknown:
        raise ValueError(f"{path}: no engine for {', '.join(f'{p.engine} {p.precision}' for p in unknown)}")
    unknown_kinds = sorted({p.cpu for p in paths} - set(KINDS))
    if unknown_kinds:
        raise ValueError(f"{path}: unknown CPU kind {', '.join(unknown_kinds)} (known: {', '.join(KINDS)})")
    return paths


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")


def check_engine(engine: str, precision: str = "auto") -> None:
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    check_precision(precision)
    if "auto" not in (engine, precision) and (engine, precision) not in ASKED:
        offered = ", ".join(p for e, p in ASKED if e == engine)
        raise ConfigError(f"--engine {engine} offers --precision {offered} or auto (got {precision!r})")


def measured_paths(model: str, engine: str = "auto", cpu: CpuFeatures | None = None) -> list[FasterPath]:
    """The qualifying paths for ``model`` on this CPU's kind (and ``engine`` unless auto), fastest first."""
    kind = (cpu or cpu_features()).kind
    found = [p for p in auto_paths() if p.model == model and p.cpu == kind and p.qualifies
             and engine in ("auto", p.engine)]
    return sorted(found, key=lambda p: -p.speed)


def choose_engine(model: str, precision: str, engine: str = "auto", cpu: CpuFeatures | None = None) -> type[Engine]:
    """The engine for ``model`` (a method's name) at ``precision`` on ``engine``: as asked, or for auto the
    fastest measured path this CPU's kind can take, else the exact engine (OpenVINO's own when it is asked)."""
    check_engine(engine, precision)
    if precision != "auto":
        runtime = engine if engine != "auto" else "onnxruntime" if ("onnxruntime", precision) in ASKED else "openvino"
        return ASKED[runtime, precision]
    best = measured_paths(model, engine, cpu)
    if best:
        return best[0].kind
    return OpenVinoFp32 if engine == "openvino" else EXACT


def runnable(kind: type[Engine], model: Model) -> type[Engine]:
    """``kind`` if it can run ``model``, else the exact engine: a graph quantised before it shipped keeps its
    own precision whatever is asked."""
    return kind if kind.runs(model) else EXACT


def fallback_engine(failed: type[Engine], model: Model, error: ExportFailed | None = None) -> type[Engine] | None:
    """What runs ``model`` when ``failed`` cannot be prepared (``error``): the exact engine, or eager PyTorch when
    the exact engine is what failed or the ONNX export itself did (the exact engine runs that export too);
    None when nothing else can."""
    export_failed = type(error) is ExportFailed and model.exportable
    if failed is not EXACT and EXACT.runs(model) and not export_failed:
        return EXACT
    return FALLBACK if FALLBACK.runs(model) and failed is not FALLBACK else None

"""The one place that decides which engine runs a model: the precision a user asks for, the CPU, and what
has been measured.

- An explicit precision runs its engine (``ASKED``).
- ``auto`` takes a faster path only where ``AUTO_PATHS`` lists it for that model and the CPU has what the
  path needs; each entry says where its fidelity was measured (instance R@1 within 0.005 of exact fp32 on
  real photos). Otherwise it runs the exact engine.
- When a compiled engine cannot be prepared (an export or a calibration fails), a model built in PyTorch
  runs on ``FALLBACK`` with one notice.

A new engine is one class in ``malle.inference.engines`` plus its entries here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from malle.errors import ConfigError
from malle.inference.cpu import CpuFeatures, cpu_features
from malle.inference.engines import EagerTorch, Engine, OnnxRuntimeFp32, OnnxRuntimeInt8
from malle.inference.model import Model

PRECISIONS = ("auto", "fp32", "int8")  # what a user may ask for; auto picks per model and CPU
ASKED: dict[str, type[Engine]] = {"fp32": OnnxRuntimeFp32, "int8": OnnxRuntimeInt8}
EXACT: type[Engine] = OnnxRuntimeFp32  # what auto runs when no faster path qualifies
FALLBACK: type[Engine] = EagerTorch  # when a compiled engine cannot be prepared


@dataclass(frozen=True)
class FasterPath:
    """A path ``auto`` may take for one model, on CPUs that have what it needs."""

    model: str  # the method's name
    engine: type[Engine]
    needs: Callable[[CpuFeatures], bool]
    measured: str  # where its fidelity was measured, and what it gave


AUTO_PATHS: tuple[FasterPath, ...] = (
    FasterPath("efficientnet_lite2", OnnxRuntimeInt8, lambda cpu: cpu.fast_int8,
               "reproduction set (200 originals, 1,216 copies) on an AVX-512 VNNI CPU: instance R@1 0.9688 against "
               "0.9671 in fp32, µAP 0.9368 against 0.9363, at twice the images/s end to end"),
)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")


def choose_engine(model: str, precision: str, cpu: CpuFeatures | None = None) -> type[Engine]:
    """The engine for ``model`` (a method's name) at ``precision``: as asked, or for auto the first
    measured faster path this CPU can take, else the exact engine."""
    check_precision(precision)
    if precision != "auto":
        return ASKED[precision]
    cpu = cpu or cpu_features()
    return next((path.engine for path in AUTO_PATHS if path.model == model and path.needs(cpu)), EXACT)


def fallback_engine(model: Model) -> type[Engine] | None:
    """What runs ``model`` when its engine cannot be prepared; None when nothing else can."""
    return FALLBACK if FALLBACK.runs(model) else None

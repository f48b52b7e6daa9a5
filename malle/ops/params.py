"""What an op's parameters are: their ranges, how ``make_params`` draws them, and how a sweep varies them.

A ``ParamSpec`` gives a UI its control (kind, range, default, help) and ``make_params``
its distribution. Values drawn are JSON-exact, so a chain stored in a manifest replays
pixel for pixel. Positions are fractions in [0, 1] of the free range, so a parameter
set means the same thing on any image size (``offset`` turns one into pixels).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Size = tuple[int, int]  # (width, height), Pillow's order


class Distribution(ABC):
    """How ``make_params`` draws one parameter; values are JSON-exact so replays match."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any: ...

    @abstractmethod
    def values_within(self, low: float, high: float) -> bool:
        """Whether every value this draws lies in [low, high]."""


@dataclass(frozen=True)
class Uniform(Distribution):
    low: float
    high: float

    def sample(self, rng):
        # Rounded so the value survives a JSON round trip exactly.
        return round(float(rng.uniform(self.low, self.high)), 4)

    def values_within(self, low, high):
        return low <= self.low <= self.high <= high


@dataclass(frozen=True)
class IntUniform(Distribution):
    low: int
    high: int

    def sample(self, rng):
        return int(rng.integers(self.low, self.high + 1))

    def values_within(self, low, high):
        return low <= self.low <= self.high <= high


@dataclass(frozen=True)
class OneOf(Distribution):
    choices: tuple

    def sample(self, rng):
        return int(rng.choice(self.choices))

    def values_within(self, low, high):
        return all(low <= c <= high for c in self.choices)


@dataclass(frozen=True)
class Fixed(Distribution):
    """The reference experiment fixes some parameters (watermark size, occluder side)."""

    value: Any

    def sample(self, rng):
        return self.value

    def values_within(self, low, high):
        return low <= self.value <= high


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of an op: the range a UI offers and the distribution ``make_params`` draws from.

    ``sample`` is None only for a parameter that an op derives itself (blur's kernel
    follows the image size). Ranges are checked once, here.
    """

    name: str
    kind: str  # "int" | "float" | "choice": the UI control
    default: Any
    low: float | None = None  # inclusive range for int/float
    high: float | None = None
    choices: tuple = ()  # for "choice"
    help: str = ""
    sample: Distribution | None = None

    def __post_init__(self):
        if self.kind == "choice":
            low, high = min(self.choices), max(self.choices)
            if self.default not in self.choices:
                raise ValueError(f"{self.name}: default {self.default!r} is not among {self.choices}")
        else:
            low, high = self.low, self.high
            if not low <= self.default <= high:
                raise ValueError(f"{self.name}: default {self.default} outside [{low}, {high}]")
        if self.sample is not None and not self.sample.values_within(low, high):
            raise ValueError(f"{self.name}: sampling {self.sample} leaves the range [{low}, {high}]")


def float_param(name: str, low: float, high: float, default: float, help: str = "",
                sample: Distribution | None = None) -> ParamSpec:
    """A float parameter drawn uniformly from its whole range unless ``sample`` says otherwise."""
    return ParamSpec(name, "float", default, low, high, help=help, sample=sample or Uniform(low, high))


def int_param(name: str, low: int, high: int, default: int, help: str = "",
              sample: Distribution | None = None) -> ParamSpec:
    return ParamSpec(name, "int", default, low, high, help=help, sample=sample or IntUniform(low, high))


def choice_param(name: str, choices: tuple, default: Any, help: str = "", derived: bool = False) -> ParamSpec:
    """``derived``: the op sets this parameter itself in ``make_params``."""
    return ParamSpec(name, "choice", default, choices=choices, help=help, sample=None if derived else OneOf(choices))


FRACTION_HELP = "fraction of the free range (0 = left/top, 1 = right/bottom)"


def fraction_param(name: str) -> ParamSpec:
    """A position (``x`` or ``y``) as a fraction of the free range, drawn uniformly."""
    return float_param(name, 0.0, 1.0, 0.5, help=f"{name} position as a {FRACTION_HELP}")


def offset(fraction: float, free: int) -> int:
    """A fraction of the free range, in whole pixels (0 when there is no room)."""
    return int(round(fraction * max(0, free)))


@dataclass(frozen=True)
class Sweep:
    """How a severity sweep varies one op: strengths in the op's own unit, and its parameters at each.

    ``values[0]`` is the untouched original. ``params(value, size, rng)`` gives the op's
    parameters at that strength for an image of ``size``; ``rng`` only places the edit
    (a crop's position, a text's seed), so along a curve only the strength changes.
    """

    unit: str  # the human parameter, e.g. "angle"
    values: tuple[float, ...]
    params: Callable[[float, Size, np.random.Generator], dict]


def random_position(rng: np.random.Generator) -> dict:
    """``x`` and ``y`` drawn uniformly, rounded like ``Uniform`` so they survive JSON."""
    return {"x": round(float(rng.uniform()), 4), "y": round(float(rng.uniform()), 4)}

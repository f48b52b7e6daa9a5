"""What an op's parameters are: their ranges, how ``make_params`` draws them, and how a sweep varies them.

A ``ParamSpec`` gives a UI its control (its ``Kind``: a float or int range drawn as a
``Slider``, or a few choices drawn as a ``SelectBox``) and ``make_params`` its distribution.
Values drawn are JSON-exact, so a chain stored in a manifest replays pixel for pixel.
Positions are fractions in [0, 1] of the free range, so a parameter set means the same
thing on any image size (``offset`` turns one into pixels).
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
class Slider:
    """A UI slider from ``low`` to ``high`` in steps of ``step`` (an int slider's are ints throughout)."""

    default: float
    low: float
    high: float
    step: float

    def fit(self, value: float) -> float:
        """``value`` snapped onto the slider's grid, so a rolled value is exactly what is applied."""
        # round() with no digits gives an int, so a step of 1 keeps an int slider's values ints.
        snapped = round(round(float(value) / self.step) * self.step, 4)
        return min(max(snapped, self.low), self.high)


@dataclass(frozen=True)
class SelectBox:
    """A UI select box offering ``options``."""

    default: Any
    options: tuple

    def fit(self, value: Any) -> Any:
        return value


Control = Slider | SelectBox


class Kind(ABC):
    """The values a parameter takes: the range they span, whether a value is one of them, and the UI control."""

    @property
    @abstractmethod
    def span(self) -> tuple[float, float]:
        """The lowest and the highest value."""

    @abstractmethod
    def __contains__(self, value: Any) -> bool: ...

    @abstractmethod
    def control(self, default: Any) -> Control: ...


@dataclass(frozen=True)
class Range(Kind):
    """Numbers from ``low`` to ``high``, both included."""

    low: float
    high: float

    @property
    def span(self):
        return self.low, self.high

    def __contains__(self, value):
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}]"


class FloatRange(Range):
    def control(self, default):
        step = 0.01 if float(self.high) - float(self.low) <= 2 else 0.1
        return Slider(float(default), float(self.low), float(self.high), step)


class IntRange(Range):
    def control(self, default):
        return Slider(int(default), int(self.low), int(self.high), 1)


@dataclass(frozen=True)
class Choices(Kind):
    """One of a few ``options``."""

    options: tuple

    @property
    def span(self):
        return min(self.options), max(self.options)

    def __contains__(self, value):
        return value in self.options

    def __str__(self) -> str:
        return "{" + ", ".join(map(repr, self.options)) + "}"

    def control(self, default):
        return SelectBox(default, self.options)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of an op: the values a UI offers (its ``kind``) and the distribution ``make_params`` draws from.

    ``sample`` is None only for a parameter that an op derives itself (blur's kernel
    follows the image size). Ranges are checked once, here.
    """

    name: str
    kind: Kind
    default: Any
    help: str = ""
    sample: Distribution | None = None

    def __post_init__(self):
        if self.default not in self.kind:
            raise ValueError(f"{self.name}: default {self.default!r} outside {self.kind}")
        if self.sample is not None and not self.sample.values_within(*self.kind.span):
            raise ValueError(f"{self.name}: sampling {self.sample} leaves the range {self.kind}")

    @property
    def derived(self) -> bool:
        """Whether the op sets this parameter itself rather than drawing it."""
        return self.sample is None


def float_param(name: str, low: float, high: float, default: float, help: str = "",
                sample: Distribution | None = None) -> ParamSpec:
    """A float parameter drawn uniformly from its whole range unless ``sample`` says otherwise."""
    return ParamSpec(name, FloatRange(low, high), default, help, sample or Uniform(low, high))


def int_param(name: str, low: int, high: int, default: int, help: str = "",
              sample: Distribution | None = None) -> ParamSpec:
    return ParamSpec(name, IntRange(low, high), default, help, sample or IntUniform(low, high))


def choice_param(name: str, choices: tuple, default: Any, help: str = "", derived: bool = False) -> ParamSpec:
    """``derived``: the op sets this parameter itself in ``make_params``."""
    return ParamSpec(name, Choices(choices), default, help, None if derived else OneOf(choices))


FRACTION_HELP = "fraction of the free range (0 = left/top, 1 = right/bottom)"


def fraction_param(name: str) -> ParamSpec:
    """A position (``x`` or ``y``) as a fraction of the free range, drawn uniformly."""
    return float_param(name, 0.0, 1.0, 0.5, help=f"{name} position as a {FRACTION_HELP}")


def position_params() -> tuple[ParamSpec, ParamSpec]:
    """``x`` then ``y``: where an edit lies, drawn uniformly (``random_position`` draws them for a sweep)."""
    return fraction_param("x"), fraction_param("y")


def offset(fraction: float, free: int) -> int:
    """A fraction of the free range, in whole pixels (0 when there is no room)."""
    return int(round(fraction * max(0, free)))


def placed(size: Size, inner: Size, x: float, y: float) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of ``inner`` at fractions ``x``, ``y`` of the free range in ``size``."""
    left, top = offset(x, size[0] - inner[0]), offset(y, size[1] - inner[1])
    return left, top, left + inner[0], top + inner[1]


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

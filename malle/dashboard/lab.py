"""Augmentation lab page: modify an original by hand and see where each method ranks it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from malle.experiment import Results
from malle.imageio import encode_jpeg, load_rgb
from malle.ops import (
    COPY_JPEG_QUALITY,
    OPS,
    ParamSpec,
    Step,
    apply_chain,
    chain_from_json,
    chain_to_json,
    sample_params,
)

from .shared import Ranking, rank_everywhere

DEFAULT_OPS = ("watermark", "rotate", "jpeg")  # the watermark makes the first view visibly modified


@dataclass(frozen=True)
class Control:
    """How to draw a ParamSpec as a widget: a slider (int/float) or a select box (choice)."""

    widget: str  # "slider" | "selectbox"
    default: Any
    low: Any = None
    high: Any = None
    step: Any = None
    options: tuple = ()


def control_for(spec: ParamSpec) -> Control:
    if spec.kind == "choice":
        return Control("selectbox", spec.default, options=tuple(spec.choices))
    if spec.kind == "int":
        return Control("slider", int(spec.default), int(spec.low), int(spec.high), 1)
    span = float(spec.high) - float(spec.low)
    return Control("slider", float(spec.default), float(spec.low), float(spec.high), 0.01 if span <= 2 else 0.1)


def param_key(op: str, name: str) -> str:
    return f"lab_param_{op}_{name}"


def roll_params(ops: Sequence[str], size: tuple[int, int], rng: np.random.Generator) -> dict[str, dict]:
    """Random parameters for a chain, drawn exactly as the experiment draws them."""
    return {step.op: step.params for step in sample_params(rng, ops, size)}


def fit_to_control(value: Any, control: Control) -> Any:
    """Snap a sampled value onto its widget's grid, so a rolled value is exactly what is applied."""
    if control.widget == "selectbox":
        return value
    if isinstance(control.step, int):
        return int(value)
    snapped = round(round(float(value) / control.step) * control.step, 4)
    return min(max(snapped, control.low), control.high)


def rolled_state(ops: Sequence[str], size: tuple[int, int], rng: np.random.Generator) -> dict[str, Any]:
    """{widget key: value} for fresh random parameters, snapped onto their widgets."""
    return {param_key(op, spec.name): fit_to_control(params[spec.name], control_for(spec))
            for op, params in roll_params(ops, size, rng).items() for spec in OPS[op].params}


def build_chain(ops: Sequence[str], params: dict[str, dict]) -> list[Step]:
    return [Step(op, dict(params.get(op) or OPS[op].default_params())) for op in ops]


def chain_json(ops: Sequence[str], params: dict[str, dict]) -> str:
    """The chain as the manifest stores it: a hashable cache key and a replayable record."""
    return chain_to_json(build_chain(ops, params))


def lab_modify(original_path: Path, chain_json: str) -> bytes:
    """Apply a chain and store it like the experiment stores copies (JPEG), so what is
    shown, searched and downloaded is the same image."""
    return encode_jpeg(apply_chain(load_rgb(original_path), chain_from_json(chain_json)), COPY_JPEG_QUALITY)


def lab_rankings(results: Results, original: str, chain_json: str, top: int = 5) -> tuple[bytes, list[Ranking]]:
    modified = lab_modify(results.experiment.originals_dir / original, chain_json)
    return modified, rank_everywhere(results, load_rgb(modified), original, top)

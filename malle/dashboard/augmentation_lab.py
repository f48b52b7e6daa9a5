"""Augmentation lab page: modify an original by hand and see where each method ranks it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from malle.dashboard.shared import Ranking, rank_everywhere
from malle.io.images import encode_jpeg, load_rgb
from malle.lab.experiment import Results
from malle.ops import (
    COPY_JPEG_QUALITY,
    OPS,
    Control,
    ParamSpec,
    Step,
    apply_chain,
    chain_from_json,
    chain_to_json,
    sample_params,
)

DEFAULT_OPS = ("watermark", "rotate", "jpeg")  # the watermark makes the first view visibly modified


def control_for(spec: ParamSpec) -> Control:
    """The widget that offers ``spec``'s values: a slider for a range, a select box for choices."""
    return spec.kind.control(spec.default)


def param_key(op: str, name: str) -> str:
    return f"lab_param_{op}_{name}"


def roll_params(ops: Sequence[str], size: tuple[int, int], rng: np.random.Generator) -> dict[str, dict]:
    """Random parameters for a chain, drawn exactly as the experiment draws them."""
    return {step.op: step.params for step in sample_params(rng, ops, size)}


def rolled_state(ops: Sequence[str], size: tuple[int, int], rng: np.random.Generator) -> dict[str, Any]:
    """{widget key: value} for fresh random parameters, snapped onto their widgets."""
    return {param_key(op, spec.name): control_for(spec).fit(params[spec.name])
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

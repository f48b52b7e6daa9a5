"""Op chains: sampled, applied, stored as JSON and described, so every copy can be replayed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from malle.errors import ConfigError

from .params import IntUniform, Size
from .reference import REFERENCE_OPS
from .registry import get_op


@dataclass(frozen=True)
class Step:
    op: str
    params: dict


def apply_chain(img: Image.Image, chain: Sequence[Step]) -> Image.Image:
    out = img
    for step in chain:
        out = get_op(step.op).apply(out, step.params)
    return out.copy() if out is img else out  # never hand back the caller's own object


def sample_chain(
    rng: np.random.Generator,
    size: Size,
    ops: Sequence[str] = REFERENCE_OPS,
    lengths: tuple[int, int] = (1, 5),
) -> list[Step]:
    """k distinct ops in random order, k uniform on lengths[0]..min(lengths[1], len(ops))."""
    check_lengths(lengths, ops)
    k = IntUniform(lengths[0], min(lengths[1], len(ops))).sample(rng)
    return sample_params(rng, [ops[i] for i in rng.permutation(len(ops))[:k]], size)


def sample_params(rng: np.random.Generator, ops: Sequence[str], size: Size) -> list[Step]:
    """Random parameters for ops applied in this order, each sampled against the size it will see."""
    chain = []
    for name in ops:
        op = get_op(name)
        params = op.make_params(rng, size)
        chain.append(Step(name, params))
        size = op.output_size(size, params)
    return chain


def check_lengths(lengths: tuple[int, int], ops: Sequence[str]) -> None:
    """Distinct, registered ops and a chain-length range they can fill; a ConfigError otherwise."""
    if len(set(ops)) != len(ops):
        raise ConfigError(f"ops must be distinct, got {list(ops)}")
    for name in ops:
        get_op(name)
    low, high = lengths
    if not 1 <= low <= min(high, len(ops)):
        raise ConfigError(f"chain lengths {low}..{high} impossible with {len(ops)} op(s)")


def chain_to_json(chain: Sequence[Step]) -> str:
    return json.dumps([{"op": s.op, "params": s.params} for s in chain], sort_keys=True, separators=(",", ":"))


def chain_from_json(s: str) -> list[Step]:
    steps = json.loads(s)
    if not isinstance(steps, list) or not all(isinstance(d, dict) and {"op", "params"} <= d.keys() for d in steps):
        raise ValueError(f"not a chain (expected a list of {{op, params}} objects): {s[:80]!r}")
    for d in steps:
        get_op(d["op"])
    return [Step(d["op"], dict(d["params"])) for d in steps]


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_chain(chain: Sequence[Step]) -> str:
    """E.g. ``rotate(angle=-7.2) → jpeg(quality=41)``."""
    if not chain:
        return "(no ops)"
    parts = []
    for step in chain:
        args = ", ".join(f"{k}={_format_value(v)}" for k, v in step.params.items())
        parts.append(f"{step.op}({args})")
    return " → ".join(parts)


def replay(original: Image.Image, chain_json: str) -> Image.Image:
    """Re-apply a manifest row's chain to its original."""
    return apply_chain(original, chain_from_json(chain_json))

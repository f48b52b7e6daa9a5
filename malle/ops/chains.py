"""Op chains: sampled, applied, stored as JSON and described, so every copy can be replayed.

Composite ops (``ContextOp``) also take an ``OpContext``, the donor pictures they paste; every other op keeps
its ``make_params(rng, size)`` and ``apply(img, params)``, and draws exactly what it drew before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from malle.errors import ConfigError
from malle.ops.composites import NO_CONTEXT, ContextOp, OpContext
from malle.ops.params import IntUniform, Size
from malle.ops.reference import REFERENCE_OPS
from malle.ops.registry import Op, get_op


@dataclass(frozen=True)
class Step:
    op: str
    params: dict


def apply_chain(img: Image.Image, chain: Sequence[Step], context: OpContext = NO_CONTEXT) -> Image.Image:
    out = img
    for step in chain:
        out = apply_step(get_op(step.op), out, step.params, context)
    return out.copy() if out is img else out  # never hand back the caller's own object


def apply_step(op: Op, img: Image.Image, params: dict, context: OpContext) -> Image.Image:
    return op.apply(img, params, context) if isinstance(op, ContextOp) else op.apply(img, params)


def sample_chain(
    rng: np.random.Generator,
    size: Size,
    ops: Sequence[str] = REFERENCE_OPS,
    lengths: tuple[int, int] = (1, 5),
    context: OpContext = NO_CONTEXT,
    single_share: float = 0.0,
) -> list[Step]:
    """k distinct ops in random order, k uniform on lengths[0]..min(lengths[1], len(ops)).

    With a ``single_share``, that share of chains is one edit alone and the rest follow ``lengths``
    (DISC21 has many single-edit queries); without one, the generator draws exactly what it always drew.
    """
    check_lengths(lengths, ops)
    single = single_share > 0 and float(rng.uniform()) < single_share
    k = 1 if single else IntUniform(lengths[0], min(lengths[1], len(ops))).sample(rng)
    return sample_params(rng, [ops[i] for i in rng.permutation(len(ops))[:k]], size, context)


def sample_params(rng: np.random.Generator, ops: Sequence[str], size: Size,
                  context: OpContext = NO_CONTEXT) -> list[Step]:
    """Random parameters for ops applied in this order, each sampled against the size it will see."""
    chain = []
    for name in ops:
        op = get_op(name)
        params = op.make_params(rng, size, context) if isinstance(op, ContextOp) else op.make_params(rng, size)
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


def replay(original: Image.Image, chain_json: str, context: OpContext = NO_CONTEXT) -> Image.Image:
    """Re-apply a manifest row's chain to its original (composites read their donors through ``context``)."""
    return apply_chain(original, chain_from_json(chain_json), context)

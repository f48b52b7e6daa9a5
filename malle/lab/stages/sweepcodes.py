"""Stage ``sweepcodes``: one method's query codes of every level of one op's sweep, encoded in one pass.

One ``encode_files`` over all the levels keeps the engine's batches full and its decoding pipeline running
across level boundaries, where a pass per level would drain and refill it at each. Level 0 is the untouched
originals, whose codes the ``embed`` stage holds already, so it is encoded here only for a method whose
queries are encoded otherwise than its database (``query_variants``: PDQ's dihedral variants).

Keyed by the sweep images and the descriptor alone, not by the copies: a run under another preset (other
copies, the same originals) reuses it. Folder: ``level_<n>.npy`` per level encoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from malle.descriptors import Descriptor
from malle.io import cache
from malle.lab.stages.base import Ctx, Node, Stage
from malle.ops.severity import GRIDS


def encoded_levels(desc: Descriptor, op: str) -> range:
    """The levels of ``op`` this stage encodes for ``desc``: all but level 0 when the embed stage holds it."""
    return range(0 if desc.query_variants > 1 else 1, len(GRIDS[op].values))


def level_file(level: int) -> str:
    return f"level_{level}.npy"


class SweepCodes(Stage):
    kind = "sweepcodes"
    version = 1
    params = ("method", "op")

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        method, op = ctx.args
        return tuple(Node("sweep", (op, level)) for level in encoded_levels(ctx.desc, op))

    def key_parts(self, ctx: Ctx) -> tuple:
        return (ctx.desc.fingerprint(),)

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        desc, (method, op) = ctx.desc, ctx.args
        levels = list(encoded_levels(desc, op))
        paths, counts = [], []
        for level in levels:
            sweep = ctx.input("sweep", op, level)
            files = cache.read_table(sweep.folder / "manifest.parquet")["file"]
            paths += [sweep.folder / "images" / f for f in files]
            counts.append(len(files))
        codes = desc.encode_files(paths, queries=True, progress=ctx.progress,
                                  desc=f"{desc.label}: {op}, {len(levels)} levels")
        for level, part in zip(levels, np.split(codes, np.cumsum(counts)[:-1])):
            cache.write_npy(tmp / level_file(level), part)
        meta.update(method=method, op=op, levels=levels, items=len(paths))


STAGE = SweepCodes()

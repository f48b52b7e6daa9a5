"""Stage ``attribution``: which op in a chain broke each miss (``malle.attribution``).

For one method's missed copies with two or more ops. Folder: ``per_query.parquet  summary.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import cache
from ..attribution import attribute_misses, summarise
from ..descriptors.base import open_progress
from .base import Ctx, Node, Stage


class Attribution(Stage):
    kind = "attribution"
    version = 1
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return (Node("search", (ctx.method,)),)

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc, method = ctx.run, ctx.desc, ctx.method
        per_query = cache.read_table(ctx.input("search", method).folder / "per_query.parquet")
        missed = int(((per_query["rank"].astype("Float64").fillna(np.inf) > 1)
                      & (per_query["chain_length"] >= 2)).sum())
        bar = open_progress(ctx.progress, missed, f"{desc.label}: which op broke each miss")
        charges = attribute_misses(desc, run.search_index(method), per_query, run.manifest, run.originals,
                                   run.originals_dir, bar, run.op_context)
        bar.close()
        cache.write_table(tmp / "per_query.parquet", charges)
        cache.write_table(tmp / "summary.parquet", summarise(method, charges))
        meta.update(method=method, items=len(charges))


STAGE = Attribution()

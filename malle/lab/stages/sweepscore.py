"""Stage ``sweepscore``: one method's Recall@1 and @10 on one sweep level, searched among the originals.

Nothing but its meta (``recall_at_1``, ``recall_at_10``, ``n``), which ``malle severity`` tabulates. It searches
codes other stages hold: the level's from ``sweepcodes`` (every level of the op encoded in one pass), level 0's
(the untouched originals) from ``embed``, which encoded exactly those images already.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from malle.evaluation import recall
from malle.io import cache
from malle.io.tables import row_ids
from malle.lab.stages.base import Ctx, Node, Stage
from malle.lab.stages.sweepcodes import encoded_levels, level_file
from malle.ops.severity import GRIDS
from malle.retrieval.topk import search

SWEEP_RANKS = (1, 10)  # severity curves report Recall@1 and Recall@10


class SweepScore(Stage):
    kind = "sweepscore"
    version = 2
    params = ("method", "op", "level")

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        method, op, level = ctx.args
        if level not in encoded_levels(ctx.desc, op):  # the untouched originals: their codes are embed's
            return Node("samples"), Node("embed", (method,))
        return Node("samples"), Node("embed", (method,)), Node("sweep", (op, level)), Node("sweepcodes", (method, op))

    def key_parts(self, ctx: Ctx) -> tuple:
        # Its own: level 0 reads no sweep stage, whose key would otherwise tell the ops' levels 0 apart.
        method, op, level = ctx.args
        return op, level, GRIDS[op].values[level]

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc, (method, op, level) = ctx.run, ctx.desc, ctx.args
        if level in encoded_levels(desc, op):
            files = cache.read_table(ctx.input("sweep", op, level).folder / "manifest.parquet")["source"]
            codes = cache.read_npy(ctx.input("sweepcodes", method, op).folder / level_file(level))
        else:
            files, codes = run.originals["file"], run.codes(method)[0]
        hits = search(run.embed_index(method), codes, max(SWEEP_RANKS), desc.metric)
        truth = row_ids(run.originals["file"], files)
        ranks = recall.first_match(hits.ids == truth[:, None]).astype("Float64").fillna(np.inf).to_numpy()
        meta.update(method=method, op=op, level=level, param=GRIDS[op].describe(GRIDS[op].values[level]),
                    n=len(files), **{f"recall_at_{k}": float((ranks <= k).mean()) if len(ranks) else float("nan")
                                     for k in SWEEP_RANKS}, items=len(files))


STAGE = SweepScore()

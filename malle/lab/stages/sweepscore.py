"""Stage ``sweepscore``: one method's Recall@1 and @10 on one sweep level, searched among the originals.

Nothing but its meta (``recall_at_1``, ``recall_at_10``, ``n``), which ``malle severity`` tabulates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from malle.evaluation import recall
from malle.io import cache
from malle.io.tables import row_ids
from malle.lab.stages.base import Ctx, Node, Stage
from malle.retrieval.topk import search

SWEEP_RANKS = (1, 10)  # severity curves report Recall@1 and Recall@10


class SweepScore(Stage):
    kind = "sweepscore"
    version = 1
    params = ("method", "op", "level")

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        method, op, level = ctx.args
        return Node("embed", (method,)), Node("sweep", (op, level))

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc, (method, op, level) = ctx.run, ctx.desc, ctx.args
        sweep = ctx.input("sweep", op, level)
        manifest = cache.read_table(sweep.folder / "manifest.parquet")
        codes = desc.encode_files([sweep.folder / "images" / f for f in manifest["file"]], queries=True,
                                  progress=ctx.progress, desc=f"{desc.label}: {op} level {level}")
        hits = search(run.embed_index(method), codes, max(SWEEP_RANKS), desc.metric)
        truth = row_ids(run.originals["file"], manifest["source"])
        ranks = recall.first_match(hits.ids == truth[:, None]).astype("Float64").fillna(np.inf).to_numpy()
        meta.update(method=method, op=op, level=level, param=sweep.meta["param"], n=len(manifest),
                    **{f"recall_at_{k}": float((ranks <= k).mean()) if len(ranks) else float("nan")
                       for k in SWEEP_RANKS}, items=len(manifest))


STAGE = SweepScore()

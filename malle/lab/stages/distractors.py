"""Stage ``distractors``: open-set queries, copies of dataset images that are not in the database.

Made from the images neither sampled as originals nor drawn as database distractors or donors
(``malle.data.pools``), with the copies' chain distribution (``malle.data.distractor_queries``).
Folder: ``images/*.JPEG  manifest.parquet  skipped.csv``.
How many: ``--distractors``, by default as many as there are copies, so the copies are an input.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from malle.data.distractor_queries import make_distractors
from malle.io import cache
from malle.lab.stages.base import Built, Ctx, Node, Stage, pixel_versions
from malle.lab.stages.outputs import DistractorsOutputs


class Distractors(Stage):
    kind = "distractors"
    version = 2

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return Node("samples"), Node("copies")

    def key_parts(self, ctx: Ctx) -> tuple:
        cfg = ctx.run.config
        return cfg.augment.as_dict(), cfg.seed, cfg.distractors, cfg.db_distractors, pixel_versions()

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, cfg = ctx.run, ctx.run.config
        manifest, skipped = make_distractors(run.distractor_pool, run.distractor_target, DistractorsOutputs(tmp).images,
                                             cfg.augment, cfg.seed, ctx.progress, run.op_context)
        cache.write_table(DistractorsOutputs(tmp).manifest, manifest)
        cache.write_table(DistractorsOutputs(tmp).skipped, pd.DataFrame(skipped, columns=["path", "reason"]))
        meta.update(items=len(manifest), pool=len(run.distractor_pool), target=run.distractor_target)

    def notice(self, ctx: Ctx, built: Built) -> str | None:
        meta = built.meta
        if meta["items"] < meta["target"]:
            return (f"Only {meta['items']} distractor queries could be made from {meta['pool']} unsampled images "
                    f"(asked for {meta['target']}); using them all.")
        return None


STAGE = Distractors()

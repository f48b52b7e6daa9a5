"""Stage ``distractors``: open-set queries that have no original in the database.

Copies of distinct dataset images, one each, from the images neither sampled as originals nor drawn as database
distractors or donors (``malle.data.pools``), with the copies' chain distribution
(``malle.data.distractor_queries``); and, in a preset that asks for them, its share of hard negatives
(``malle.data.hard_negatives``), listed after the copies.
Folder: ``images/*.JPEG  manifest.parquet  skipped.csv``.
How many: ``--distractors``, by default as many as there are copies, so the copies are an input.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from malle.data import hard_negatives
from malle.data.distractor_queries import DISTRACTOR_COLUMNS, make_distractors
from malle.io import cache
from malle.lab.stages.base import Built, Ctx, Node, Stage, pixel_versions
from malle.lab.stages.outputs import DistractorsOutputs
from malle.ops.presets import preset_of


class Distractors(Stage):
    kind = "distractors"
    version = 3  # 3: one copy per spare image, and the manifest's kind column

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return Node("samples"), Node("copies")

    def key_parts(self, ctx: Ctx) -> tuple:
        cfg = ctx.run.config
        share = preset_of(cfg.augment).hard_negative_share
        negatives = (share, hard_negatives.VERSION) if share else ()
        return cfg.augment.as_dict(), cfg.seed, cfg.distractors, cfg.db_distractors, pixel_versions(), *negatives

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, cfg, out = ctx.run, ctx.run.config, DistractorsOutputs(tmp)
        wanted = preset_of(cfg.augment).hard_negatives(run.distractor_target)
        copies, skipped = make_distractors(run.distractor_pool, run.distractor_target - wanted, out.images,
                                           cfg.augment, cfg.seed, ctx.progress, run.op_context)
        negatives, passed_over = hard_negatives.make_hard_negatives(wanted, run.distractor_pool, out.images,
                                                                    cfg.seed, ctx.progress)
        manifest = pd.DataFrame([*copies.to_dict("records"), *negatives], columns=DISTRACTOR_COLUMNS)
        cache.write_table(out.manifest, manifest)
        cache.write_table(out.skipped, pd.DataFrame(skipped + passed_over, columns=["path", "reason"]))
        meta.update(items=len(manifest), copies=len(copies), hard_negatives=len(negatives),
                    pool=len(run.distractor_pool), target=run.distractor_target)

    def notice(self, ctx: Ctx, built: Built) -> str | None:
        meta = built.meta
        if meta["items"] >= meta["target"]:
            return None
        negatives = f", and {meta['hard_negatives']} hard negatives" if meta["hard_negatives"] else ""
        return (f"Only {meta['items']} distractor queries could be made: {meta['copies']} from {meta['pool']} "
                f"unsampled images, one each{negatives} (asked for {meta['target']}); using them all.")


STAGE = Distractors()

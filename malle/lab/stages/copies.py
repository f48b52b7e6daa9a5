"""Stage ``copies``: each original's modified copies, with replayable op chains.

Folder: ``images/*.JPEG  manifest.parquet``.
"""

from __future__ import annotations

from pathlib import Path

from malle.io import cache
from malle.lab.stages.base import Built, Ctx, Node, Stage, pixel_versions
from malle.lab.stages.outputs import CopiesOutputs
from malle.ops import make_copies


class Copies(Stage):
    kind = "copies"
    version = 2

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return (Node("samples"),)

    def key_parts(self, ctx: Ctx) -> tuple:
        cfg = ctx.run.config
        # The donors only where composite ops paste them: keys of runs without composites stay as they were.
        donors = (ctx.run.donor_key,) if cfg.augment.has_composites else ()
        return cfg.augment.as_dict(), cfg.seed, pixel_versions(), *donors

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, cfg = ctx.run, ctx.run.config
        out = CopiesOutputs(tmp)
        manifest = make_copies(run.originals, run.originals_dir, out.images, cfg.augment, cfg.seed, ctx.progress,
                               run.op_context)
        cache.write_table(out.manifest, manifest)
        meta.update(items=len(manifest), chain_lengths=cfg.augment.describe())
        if cfg.augment.has_composites:
            meta.update(donors=len(run.op_context.donors))

    def notice(self, ctx: Ctx, built: Built) -> str | None:
        if built.meta.get("donors") == 0:
            return ("No donor pictures: every spare image of the dataset is taken, so composite edits (inset, overlay, "
                    "collage) paste generated stripe patterns instead of other photos.")
        return None


STAGE = Copies()

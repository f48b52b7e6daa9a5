"""Stage ``copies``: each original's modified copies, with replayable op chains.

Folder: ``images/*.JPEG  manifest.parquet``.
"""

from __future__ import annotations

from pathlib import Path

from .. import cache
from ..ops import make_copies
from .base import Ctx, Node, Stage, pixel_versions


class Copies(Stage):
    kind = "copies"
    version = 2

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return (Node("samples"),)

    def key_parts(self, ctx: Ctx) -> tuple:
        cfg = ctx.run.config
        return cfg.augment.as_dict(), cfg.seed, pixel_versions()

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, cfg = ctx.run, ctx.run.config
        manifest = make_copies(run.originals, run.originals_dir, tmp / "images", cfg.augment, cfg.seed, ctx.progress)
        cache.write_table(tmp / "manifest.parquet", manifest)
        meta.update(items=len(manifest), chain_lengths=cfg.augment.describe())


STAGE = Copies()

"""Stage ``sweep``: every original with one op alone at one level of its severity grid.

Level 0 is the untouched original, byte for byte; an original the level makes unusable is skipped.
Folder: ``images/*.JPEG  manifest.parquet  skipped.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from malle.descriptors.base import open_progress
from malle.io import cache
from malle.lab.stages.base import Ctx, Node, Stage, pixel_versions
from malle.ops.severity import GRIDS, LevelImage, make_level


class SeveritySweep(Stage):
    kind = "sweep"
    version = 1
    params = ("op", "level")

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return (Node("samples"),)

    def key_parts(self, ctx: Ctx) -> tuple:
        op, level = ctx.args
        return op, level, GRIDS[op].values[level], ctx.run.config.seed, pixel_versions()

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, (op, level) = ctx.run, ctx.args
        grid, value = GRIDS[op], GRIDS[op].values[level]
        (tmp / "images").mkdir()
        files = list(run.originals["file"])
        bar = open_progress(ctx.progress, len(files), f"{op} {grid.describe(value)}")
        try:
            if level == 0:  # the untouched original, byte for byte
                reasons: list[str | None] = []
                for file in files:
                    cache.write_bytes(tmp / "images" / file, (run.originals_dir / file).read_bytes())
                    reasons.append(None)
                    bar.update(1)
            else:  # on the worker pool: each image depends on its own original and placement alone
                reasons = make_level([LevelImage(op, value, run.config.seed, run.originals_dir / file,
                                                 tmp / "images" / file) for file in files], bar)
        finally:
            bar.close()
        rows = [file for file, reason in zip(files, reasons) if reason is None]
        skipped = [{"path": file, "reason": reason} for file, reason in zip(files, reasons) if reason is not None]
        cache.write_table(tmp / "manifest.parquet", pd.DataFrame({"file": rows, "source": rows}))
        cache.write_table(tmp / "skipped.csv", pd.DataFrame(skipped, columns=["path", "reason"]))
        meta.update(op=op, level=level, param=grid.describe(value), items=len(rows))


STAGE = SeveritySweep()

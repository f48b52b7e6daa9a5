"""Stage ``sweep``: every original with one op alone at one level of its severity grid.

Level 0 is the untouched original, byte for byte; an original the level makes unusable is skipped.
Folder: ``images/*.JPEG  manifest.parquet  skipped.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from malle.descriptors.base import open_progress
from malle.errors import BadImage
from malle.io import cache
from malle.io.images import encode_jpeg, load_rgb
from malle.lab.stages.base import Ctx, Node, Stage, pixel_versions
from malle.ops import COPY_JPEG_QUALITY
from malle.ops.severity import GRIDS, placement_rng


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
        rows, skipped = [], []
        bar = open_progress(ctx.progress, len(run.originals), f"{op} {grid.describe(value)}")
        for file in run.originals["file"]:
            if level == 0:  # the untouched original, byte for byte
                cache.write_bytes(tmp / "images" / file, (run.originals_dir / file).read_bytes())
                rows.append(file)
            else:
                try:
                    out = grid.make(load_rgb(run.originals_dir / file), value,
                                    placement_rng(run.config.seed, file, op))
                    cache.write_bytes(tmp / "images" / file, encode_jpeg(out, COPY_JPEG_QUALITY))
                    rows.append(file)
                except BadImage as err:
                    skipped.append({"path": file, "reason": str(err)})
            bar.update(1)
        bar.close()
        cache.write_table(tmp / "manifest.parquet", pd.DataFrame({"file": rows, "source": rows}))
        cache.write_table(tmp / "skipped.csv", pd.DataFrame(skipped, columns=["path", "reason"]))
        meta.update(op=op, level=level, param=grid.describe(value), items=len(rows))


STAGE = SeveritySweep()

"""Stage ``samples``: pick the originals from the dataset folder and store them.

Folder: ``originals/*.JPEG  originals.parquet  skipped.csv``. Keyed by the dataset's file list, the
sample's config and the libraries that produce pixels.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from malle.data.sampling import select, write_originals
from malle.errors import DatasetError
from malle.io import cache
from malle.lab.stages.base import Built, Ctx, Stage, pixel_versions
from malle.lab.stages.outputs import SamplesOutputs


class Samples(Stage):
    kind = "samples"
    version = 2

    def key_parts(self, ctx: Ctx) -> tuple:
        cfg = ctx.run.config
        return ctx.run.dataset_fingerprint, cfg.n, cfg.seed, cfg.n_classes, pixel_versions()

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, cfg = ctx.run, ctx.run.config
        candidates, passed_over = run.discovered
        picked, bad = select(candidates, cfg.n, cfg.n_classes, cfg.seed, ctx.progress)
        if not picked:
            raise DatasetError(f"no usable image in {run.data_root} ({len(bad)} files could not be read)")
        originals = write_originals(picked, SamplesOutputs(tmp).originals)
        cache.write_table(SamplesOutputs(tmp).table, originals)
        cache.write_table(SamplesOutputs(tmp).skipped, pd.DataFrame(passed_over + bad, columns=["path", "reason"]))
        meta.update(items=len(originals), dataset=str(run.data_root))

    def notice(self, ctx: Ctx, built: Built) -> str | None:
        wanted = ctx.run.config.n
        if built.meta["items"] < wanted:
            return f"The dataset has only {built.meta['items']} usable images (asked for {wanted}); using them all."
        return None


STAGE = Samples()

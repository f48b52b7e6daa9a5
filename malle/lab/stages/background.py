"""Stage ``background``: one base method's codes of the background set that ``METHOD+norm`` normalises against.

The set (``RunContext.background_images``) is ``--background DIR``, or unsampled dataset images that are neither
database distractors, donors nor distractor sources. Folder: ``codes.npy  background.parquet  skipped.csv``;
its meta records the set's size, source and fingerprint (``config.json`` repeats them).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from malle.data.pools import background_key
from malle.data.sampling import dataset_fingerprint
from malle.errors import ConfigError
from malle.io import cache
from malle.lab.stages.base import Ctx, Node, Stage
from malle.lab.stages.outputs import BackgroundOutputs


class Background(Stage):
    kind = "background"
    version = 1
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        if ctx.run.config.background:
            return ()
        # Drawn from what the originals, database distractors, donors and distractor queries leave.
        return (Node("samples"), Node("distractors")) if ctx.run.wants_distractors else (Node("samples"),)

    def key_parts(self, ctx: Ctx) -> tuple:
        run = ctx.run
        if run.config.background:
            return ctx.desc.fingerprint(), "folder", dataset_fingerprint(run.background_images)
        return ctx.desc.fingerprint(), "dataset", *background_key(run.config.seed, run.config.db_distractors)

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc = ctx.run, ctx.desc
        images = run.background_images
        found = desc.encode_files_skipping([c.path for c in images], progress=ctx.progress,
                                           desc=f"{desc.label}: background set")
        needed = run.normalisation.last
        if len(found.kept) < needed:
            where = f"--background {run.config.background}" if run.config.background else (
                "the dataset's unused images (after originals, database distractors, donors and distractor queries)")
            raise ConfigError(f"{ctx.method}+norm needs a background set of at least {needed} images; "
                              f"{where} gave {len(found.kept)}. Pass --background DIR")
        kept = [images[i] for i in found.kept]
        cache.write_npy(BackgroundOutputs(tmp).codes, found.codes)
        cache.write_table(BackgroundOutputs(tmp).table, pd.DataFrame({"file": [c.rel for c in kept],
                                                                    "class": [c.label for c in kept]}))
        cache.write_table(BackgroundOutputs(tmp).skipped, found.skipped)
        meta.update(method=ctx.method, items=len(kept), skipped=len(found.skipped),
                    source=str(Path(run.config.background).expanduser()) if run.config.background else "dataset",
                    fingerprint=dataset_fingerprint(kept))


STAGE = Background()

"""Stage ``references``: one method's codes of the extra database items that no query copies.

Database distractors (``--db-distractors``: unsampled images of the dataset) and ``--db-extra``
(a folder of images, or the embeddings ``malle embed`` wrote). Folder:
``references.parquet  codes.npy  skipped.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from malle.data.pools import EMBEDDED_PREFIX, reference_rows
from malle.io import cache, shards
from malle.lab.stages.base import Built, Ctx, Node, Stage
from malle.lab.stages.outputs import ReferencesOutputs


class References(Stage):
    kind = "references"
    version = 1
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return (Node("samples"),)  # database distractors are the images the sample left out

    def key_parts(self, ctx: Ctx) -> tuple:
        cfg = ctx.run.config
        return ctx.desc.fingerprint(), cfg.db_distractors, cfg.seed, ctx.run.extra_fingerprint

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc = ctx.run, ctx.desc
        sources = reference_rows(run.db_distractor_images, run.extra_images)
        found = desc.encode_files_skipping([Path(p) for p in sources["path"]], progress=ctx.progress,
                                           desc=f"{desc.label}: extra references")
        table, codes = sources.iloc[found.kept][["file", "class"]], [found.codes]
        if run.extra_embeddings is not None and run.extra_root is not None:  # embeddings come from that folder
            loaded = shards.read(run.extra_root, desc)
            if shards.fingerprint_differs(loaded.manifest, desc):
                run.log(f"{desc.label}: the embeddings in {run.extra_root} were made with another precision, "
                        f"weights or library version ({loaded.manifest['label']}); using them as they are.")
            table = pd.concat([table, pd.DataFrame({"file": [f"{EMBEDDED_PREFIX}{p}" for p in loaded.paths],
                                                    "class": ""})], ignore_index=True)
            codes.append(loaded.vectors)
        cache.write_table(ReferencesOutputs(tmp).table, table.reset_index(drop=True))
        cache.write_npy(ReferencesOutputs(tmp).codes, np.concatenate(codes) if len(table) else desc.empty_codes())
        cache.write_table(ReferencesOutputs(tmp).skipped, found.skipped)
        meta.update(method=ctx.method, items=len(table), skipped=len(found.skipped))

    def notice(self, ctx: Ctx, built: Built) -> str | None:
        if built.meta["skipped"]:
            return (f"{ctx.desc.label}: {built.meta['skipped']} extra reference file(s) skipped; reasons in "
                    f"{ReferencesOutputs(built.folder).skipped}")
        return None


STAGE = References()

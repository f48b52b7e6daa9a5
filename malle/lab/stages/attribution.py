"""Stage ``attribution``: which op in a chain broke each miss (``malle.evaluation.leave_one_out``).

For one method's missed copies with two or more ops. Folder: ``per_query.parquet  summary.parquet``.
The replays themselves are made in parallel and kept in the cache per original and chain left
(``replays/<key>/replay.JPEG``), so other methods and later runs reuse them.
"""

from __future__ import annotations

from pathlib import Path

from malle.descriptors.base import open_progress
from malle.evaluation.leave_one_out import attribute_misses, missed_mask, summarise
from malle.io import cache
from malle.lab.stages.base import Ctx, Node, Stage, pixel_versions
from malle.lab.stages.outputs import AttributionOutputs, SearchOutputs


class Attribution(Stage):
    kind = "attribution"
    version = 1
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return (Node("search", (ctx.method,)),)

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc, method = ctx.run, ctx.desc, ctx.method
        per_query = cache.read_table(SearchOutputs(ctx.input("search", method).folder).per_query)
        bar = open_progress(ctx.progress, int(missed_mask(per_query).sum()), f"{desc.label}: which op broke each miss")
        charges = attribute_misses(desc, run.search_index(method), per_query, run.manifest, run.originals,
                                   run.originals_dir, bar, run.op_context, run.root, run.dataset_fingerprint,
                                   tuple(pixel_versions().items()))
        bar.close()
        cache.write_table(AttributionOutputs(tmp).per_query, charges)
        cache.write_table(AttributionOutputs(tmp).summary, summarise(method, charges))
        meta.update(method=method, items=len(charges))


STAGE = Attribution()

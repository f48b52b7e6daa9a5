"""Stage ``embed``: one method's codes of the originals and the copies, and an exact index over the originals.

Folder: ``originals.npy  queries.npy  index.faiss`` (and ``*_quality.npy`` for methods with a quality score).
Keyed by the copies and the descriptor's cheap fingerprint (weights, precision, library versions).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from malle.descriptors import Descriptor
from malle.inference.cpu import cpu_features
from malle.io import cache
from malle.lab.stages.base import Ctx, Node, Stage
from malle.lab.stages.outputs import EmbedCost, EmbedOutputs
from malle.retrieval.topk import save_index


def quality_summary(desc: Descriptor, qualities: Sequence[np.ndarray | None], folder: Path) -> dict:
    """For methods with a quality score: store it and count the codes below the method's threshold."""
    kept = [q for q in qualities if q is not None]
    if not kept or desc.quality_threshold is None:
        return {}
    out = EmbedOutputs(folder)
    for path, quality in zip((out.originals_quality, out.queries_quality), qualities):
        if quality is not None:
            cache.write_npy(path, quality)
    everything = np.concatenate(kept)
    low = int((everything < desc.quality_threshold).sum())
    return {"low_quality": low, "low_quality_share": low / max(len(everything), 1),
            "quality_threshold": desc.quality_threshold}


class Embed(Stage):
    kind = "embed"
    version = 3
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return Node("samples"), Node("copies")

    def key_parts(self, ctx: Ctx) -> tuple:
        return (ctx.desc.fingerprint(),)

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc = ctx.run, ctx.desc
        start = time.perf_counter()
        db = desc.encode_files_scored([run.originals_dir / f for f in run.originals["file"]],
                                      progress=ctx.progress, desc=f"{desc.label}: originals")
        queries = desc.encode_files_scored([run.copies_dir / f for f in run.manifest["file"]],
                                           progress=ctx.progress, desc=f"{desc.label}: copies", queries=True)
        seconds = time.perf_counter() - start
        cache.write_npy(EmbedOutputs(tmp).originals, db.codes)
        cache.write_npy(EmbedOutputs(tmp).queries, queries.codes)
        save_index(desc.metric.build_index(db.codes), EmbedOutputs(tmp).index, desc.metric)
        n = len(db.codes) + len(queries.codes)
        cost = EmbedCost(label=desc.label, family=desc.family, metric=desc.metric.name, dim=desc.dim,
                         precision=desc.precision, runtime=desc.runtime(), cpu=cpu_features().describe(),
                         images_per_s=n / seconds if seconds else float("nan"))
        meta.update(method=ctx.method, items=n, encode_seconds=seconds, **cost.as_meta())
        meta.update(quality_summary(desc, [db.quality, queries.quality], tmp))  # with low_quality_share


STAGE = Embed()

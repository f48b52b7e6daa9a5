"""Which op in a chain caused a miss: replay the chain with each op left out in turn, and re-rank.

For a query whose true original is not ranked first and whose chain has two or
more ops, every op whose removal restores the hit (the original ranked first
again) is charged with the miss; when several do, each takes an equal share, and
when none does the miss is charged to "the combination". The replays are made
exactly as the copies were (the manifest's parameters, then JPEG at the copies'
quality), so leaving nothing out reproduces the stored copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .descriptors import Descriptor
from .imageio import encode_jpeg, load_rgb
from .ops import COPY_JPEG_QUALITY, NO_CONTEXT, OpContext, Step, apply_chain, chain_from_json
from .search import search

COMBINATION = "the combination"


def leave_one_out(original: Image.Image, chain: Sequence[Step], context: OpContext = NO_CONTEXT) -> list[Image.Image]:
    """The copy remade without each op in turn, stored like the copies (JPEG); composites read ``context``."""
    return [load_rgb(encode_jpeg(apply_chain(original, [s for j, s in enumerate(chain) if j != i], context),
                                 COPY_JPEG_QUALITY)) for i in range(len(chain))]


def charged_ops(desc: Descriptor, index, original: Image.Image, chain: Sequence[Step], source_id: int,
                context: OpContext = NO_CONTEXT) -> list[str]:
    """The ops whose removal puts the true original back at rank 1 (empty: only the combination misses)."""
    codes = desc.encode_queries(leave_one_out(original, chain, context))
    hits = search(index, codes, 1, desc.metric)
    return [step.op for step, top in zip(chain, hits.ids[:, 0]) if top == source_id]


def summarise(method: str, per_query: pd.DataFrame) -> pd.DataFrame:
    """``method, op, misses_charged, share`` from per-query charges (``charged``: ops joined by ``|``)."""
    if per_query.empty:
        return pd.DataFrame({"method": pd.Series(dtype=str), "op": pd.Series(dtype=str),
                             "misses_charged": pd.Series(dtype=float), "share": pd.Series(dtype=float)})
    charges: dict[str, float] = {}
    for charged in per_query["charged"]:
        ops = charged.split("|") if charged != COMBINATION else [COMBINATION]
        for op in ops:
            charges[op] = charges.get(op, 0.0) + 1.0 / len(ops)
    table = pd.DataFrame({"method": method, "op": list(charges), "misses_charged": list(charges.values())})
    table["share"] = table["misses_charged"] / len(per_query)
    return table.sort_values(["misses_charged", "op"], ascending=[False, True], ignore_index=True)


def attribute_misses(desc: Descriptor, index, per_query: pd.DataFrame, manifest: pd.DataFrame,
                     originals: pd.DataFrame, originals_dir, progress_bar=None,
                     context: OpContext = NO_CONTEXT) -> pd.DataFrame:
    """Per missed query with two or more ops: ``query, ops, charged`` (``charged`` as ``op|op`` or the combination)."""
    missed = per_query[(per_query["rank"].astype("Float64").fillna(np.inf) > 1) & (per_query["chain_length"] >= 2)]
    chains = manifest.set_index("file")["chain"]
    ids = pd.Series(np.arange(len(originals)), index=originals["file"])
    rows = []
    for row in missed.itertuples():
        chain = chain_from_json(chains[row.query])
        ops = charged_ops(desc, index, load_rgb(originals_dir / row.source), chain, int(ids[row.source]), context)
        rows.append({"query": row.query, "ops": row.ops, "charged": "|".join(ops) if ops else COMBINATION})
        if progress_bar is not None:
            progress_bar.update(1)
    return pd.DataFrame(rows, columns=["query", "ops", "charged"])

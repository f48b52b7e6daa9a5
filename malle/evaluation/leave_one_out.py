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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from malle import parallel
from malle.descriptors import Descriptor
from malle.io import cache
from malle.io.images import encode_jpeg, load_rgb
from malle.ops import COPY_JPEG_QUALITY, NO_CONTEXT, OpContext, Step, apply_chain, chain_from_json, chain_to_json
from malle.ops.composites import ContextOp
from malle.ops.registry import OPS
from malle.retrieval.topk import search

COMBINATION = "the combination"
REPLAY_KIND = "replays"  # cache folder kind: one verified folder per original and chain replayed
REPLAY_VERSION = 1
REPLAY_FILE = "replay.JPEG"


def leave_one_out(original: Image.Image, chain: Sequence[Step], context: OpContext = NO_CONTEXT) -> list[Image.Image]:
    """The copy remade without each op in turn, stored like the copies (JPEG); composites read ``context``."""
    return [load_rgb(data) for data in _replays(original, chain, context)]


def _replays(original: Image.Image, chain: Sequence[Step], context: OpContext) -> list[bytes]:
    return [_replay(original, _without(chain, i), context) for i in range(len(chain))]


def _without(chain: Sequence[Step], left_out: int) -> list[Step]:
    return [step for j, step in enumerate(chain) if j != left_out]


def _replay(original: Image.Image, chain: Sequence[Step], context: OpContext) -> bytes:
    return encode_jpeg(apply_chain(original, chain, context), COPY_JPEG_QUALITY)


@dataclass(frozen=True)
class ReplayJob:
    """One missed query's replays, as a worker process makes them: everything it reads is named here.

    ``cache_root``: where each replay is kept, keyed by the original's bytes and the chain left after the
    op is taken out (None: nothing is kept). ``dataset_key`` covers the donor pictures of composite ops,
    ``versions`` the libraries that make the pixels (``malle.lab.stages.pixel_versions``).
    """

    original: Path
    chain_json: str
    context: OpContext = NO_CONTEXT
    cache_root: Path | None = None
    dataset_key: str = ""
    versions: tuple = ()


def replay_query(job: ReplayJob) -> list[bytes]:
    """The JPEG bytes of the copy remade without each op in turn (``leave_one_out``'s, before decoding)."""
    chain = chain_from_json(job.chain_json)
    if job.cache_root is None:
        return _replays(load_rgb(job.original), chain, job.context)
    digest = cache.file_digest(job.original)
    folders = [_replay_folder(job, digest, _without(chain, i)) for i in range(len(chain))]
    original: list[Image.Image] = []  # decoded once, and only when a replay is not cached

    def build(reduced: list[Step]):
        def write(tmp: Path, meta: dict) -> None:
            if not original:
                original.append(load_rgb(job.original))
            cache.write_bytes(tmp / REPLAY_FILE, _replay(original[0], reduced, job.context))
            meta.update(items=1)
        return write

    for i, folder in enumerate(folders):
        cache.obtain(folder, build(_without(chain, i)))
    return [(folder / REPLAY_FILE).read_bytes() for folder in folders]


def _replay_folder(job: ReplayJob, original_digest: str, reduced: list[Step]) -> Path:
    assert job.cache_root is not None, "replays are kept only with a cache"
    pasted = any(isinstance(OPS[step.op], ContextOp) for step in reduced)
    donors = (str(job.context.root), job.dataset_key) if pasted else ()
    key = cache.fingerprint(REPLAY_KIND, REPLAY_VERSION, original_digest, chain_to_json(reduced), donors,
                            COPY_JPEG_QUALITY, job.versions)
    return job.cache_root / REPLAY_KIND / key


def charged_ops(desc: Descriptor, index, original: Image.Image, chain: Sequence[Step], source_id: int,
                context: OpContext = NO_CONTEXT) -> list[str]:
    """The ops whose removal puts the true original back at rank 1 (empty: only the combination misses)."""
    return _charged(desc, index, leave_one_out(original, chain, context), chain, source_id)


def _charged(desc: Descriptor, index, replays: list[Image.Image], chain: Sequence[Step], source_id: int) -> list[str]:
    hits = search(index, desc.encode_queries(replays), 1, desc.metric)
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


def missed_mask(per_query: pd.DataFrame) -> pd.Series:
    """The queries attribution explains: the true original not ranked first, and a chain of two or more ops."""
    return (per_query["rank"].astype("Float64").fillna(np.inf) > 1) & (per_query["chain_length"] >= 2)


def attribute_misses(desc: Descriptor, index, per_query: pd.DataFrame, manifest: pd.DataFrame,
                     originals: pd.DataFrame, originals_dir, progress_bar=None,
                     context: OpContext = NO_CONTEXT, cache_root: Path | None = None,
                     dataset_key: str = "", versions: tuple = ()) -> pd.DataFrame:
    """Per missed query with two or more ops: ``query, ops, charged`` (``charged`` as ``op|op`` or the combination).

    The replays are made in worker processes (``malle.parallel``), and kept under ``cache_root`` when given,
    so another method, or a chain that changed in one op, replays only what is new (``dataset_key`` and
    ``versions``: see ``ReplayJob``); each query's replays
    are encoded here, as one batch, in the queries' order, exactly as one process would."""
    missed = per_query[missed_mask(per_query)]
    chains = manifest.set_index("file")["chain"]
    ids = pd.Series(np.arange(len(originals)), index=originals["file"])
    jobs = [ReplayJob(Path(originals_dir) / row.source, chains[row.query], context,
                      Path(cache_root) if cache_root is not None else None, dataset_key, versions)
            for row in missed.itertuples()]
    rows = []
    for row, job, replays in zip(missed.itertuples(), jobs, parallel.ordered_map(replay_query, jobs)):
        ops = _charged(desc, index, [load_rgb(data) for data in replays], chain_from_json(job.chain_json),
                       int(ids[row.source]))
        rows.append({"query": row.query, "ops": row.ops, "charged": "|".join(ops) if ops else COMBINATION})
        if progress_bar is not None:
            progress_bar.update(1)
    return pd.DataFrame(rows, columns=["query", "ops", "charged"])

"""``python -m malle embed``: a folder of images into Parquet shards (``malle.io.shards``), on this machine or
on a Ray cluster.

Locally, the descriptor's own pipelined ``encode_files`` runs over the folder. With
``--ray ADDRESS``, Ray Data reads the files and ``map_batches`` sends them through a
pool of actors, each holding one descriptor (one inference session). Both paths decode
with ``load_rgb`` and batch the same way, so they write the same shards; the tests
compare them on real photos. A file that is not a usable image is left out and
recorded in ``skipped.csv`` either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from malle.data.sampling import discover
from malle.descriptors import Descriptor, create_descriptor
from malle.descriptors.base import Skipping, open_progress
from malle.errors import BadImage
from malle.io import cache
from malle.io import shards as embeddings
from malle.io.images import load_rgb
from malle.scale.ray_cluster import connect

RAY_BATCH = 64  # images per map_batches call: a multiple of every engine's own batch, so batches line up


@dataclass(frozen=True)
class EmbedJob:
    data: Path
    method: str
    out: Path
    precision: str = "auto"
    weights: str | None = None
    cache_root: Path | None = None  # where exported models are kept

    def descriptor(self) -> Descriptor:
        desc = create_descriptor(self.method, weights=self.weights, precision=self.precision)
        desc.use_cache(self.cache_root or cache.default_root())
        return desc


def run(job: EmbedJob, ray_address: str | None = None, progress: Callable | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Embed every image under ``job.data`` into ``job.out``; returns the manifest written."""
    candidates, passed_over = discover(job.data)
    names = [c.rel for c in candidates]
    paths = [c.path for c in candidates]
    if ray_address:
        connect(ray_address, log)  # an unreachable cluster fails before anything is loaded
    desc = job.descriptor()
    desc.load()  # fail on weights before any file is read
    for notice in desc.notices:
        log(notice)
    label = f"{desc.label}: {job.data}"
    found = (encode_on_ray(job, paths, ray_address, open_progress(progress, len(paths), label), log) if ray_address
             else desc.encode_files_skipping(paths, progress=progress, desc=label))
    skipped = pd.concat([pd.DataFrame(passed_over, columns=["path", "reason"]),
                         found.skipped.assign(path=[relative(p, job.data) for p in found.skipped["path"]])],
                        ignore_index=True)
    return embeddings.write(job.out, desc, [names[i] for i in found.kept], found.codes, skipped)


def relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


# -- Ray ---------------------------------------------------------------------------------------------
class EncodeActor:
    """One per pool slot: builds its descriptor once, then encodes the batches Ray Data sends it."""

    def __init__(self, job: EmbedJob):
        self.desc = job.descriptor()
        self.desc.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, reasons = [], []
        for data in batch["bytes"]:
            try:
                images.append(load_rgb(bytes(data)))
                reasons.append("")
            except BadImage as err:
                reasons.append(str(err))
        codes = self.desc.encode(images) if images else self.desc.empty_codes()
        full = np.zeros((len(reasons), codes.shape[1]), dtype=codes.dtype)
        full[[i for i, reason in enumerate(reasons) if not reason]] = codes
        return {"path": batch["path"], "vector": full, "reason": np.asarray(reasons, dtype=object)}


def encode_on_ray(job: EmbedJob, paths: Sequence[Path], address: str, bar, log: Callable[[str], None]) -> Skipping:
    connect(address, log)
    import ray.data  # binds ray too

    # Our own bar reports progress; Ray Data's bars and per-operator log lines would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Each actor takes one CPU (its session runs one thread: Ray sets OMP_NUM_THREADS); one CPU stays free
    # for the read tasks, or a 2-CPU cluster would wait on itself forever.
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = max(1, cpus - 1)
    files = ray.data.read_binary_files([str(p) for p in paths], include_paths=True)
    encoded = files.map_batches(EncodeActor, fn_constructor_args=(job,), batch_size=RAY_BATCH,
                                compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1, batch_format="numpy")
    by_path = {}
    try:
        for row in encoded.iter_rows():
            by_path[row["path"]] = row
            bar.update(1)
    finally:
        bar.close()
    return reassemble(paths, by_path, job.descriptor())


def reassemble(paths: Sequence[Path], by_path: dict, desc: Descriptor) -> Skipping:
    """Rows back in the folder's order, the bad files apart."""
    kept, codes, skipped = [], [], []
    for position, path in enumerate(paths):
        row = by_path[str(path)]
        if row["reason"]:
            skipped.append({"path": str(path), "reason": row["reason"]})
        else:
            kept.append(position)
            codes.append(np.asarray(row["vector"]))
    stacked = np.stack(codes).astype(desc.metric.dtype) if codes else desc.empty_codes()
    return Skipping(stacked, np.asarray(kept, dtype=np.int64), pd.DataFrame(skipped, columns=["path", "reason"]))

"""A large FAISS index built in pieces, on Ray or here, with its inverted lists on disk.

The input is an embeddings folder that ``python -m malle embed`` wrote (Parquet shards plus
``embeddings.json``). The build follows FAISS's ``faiss.contrib.ondisk`` recipe
(``demos/demo_ondisk_ivf.py``):

1. **train once**: an empty IVF index (``IVF1024,PQ32``...) is trained on a sample of whole shards,
   drawn in a seeded random order (shards follow the embedded folder's order, so neighbouring
   shards are often alike), then cut to ``train_size`` rows;
2. **add in pieces**: each task receives the trained empty index and a group of shards, reads them
   (checking each shard's SHA-256 against the manifest), adds them with their global row numbers as
   ids and returns the filled index, which the driver writes to ``parts/``. Tasks run as Ray tasks
   with ``--ray`` (workers read the shards, so every node must see the embeddings folder at the same
   path, as for ``embed --ray``), or one after another here;
3. **merge on disk**: ``merge_ondisk`` concatenates the parts' inverted lists, list by list, into
   ``index.ivfdata`` and the index header (quantizer, PQ tables) goes to ``index.faiss``.

Ids are row numbers in the embeddings folder: id ``i`` is the ``i``-th path over the shards in manifest
order. Memory stays at one shard group per task and, in the driver, the trained index and one part at a
time; ``index.ivfdata`` is memory-mapped when searched, so it may exceed the RAM.

The output folder holds ``trained.faiss`` (kept: new shards can be added with it later), ``index.faiss``,
``index.ivfdata`` and, written last, ``ondisk.json`` (factory, metric, search parameters, counts, the method's
fingerprint digest and precision, the source manifest's SHA-256 and the index files' SHA-256): a bank takes the
index for a collection of the same method, fingerprint and factory (``malle bank add --index-from``). Until it
is written the folder is incomplete; ``open_index`` verifies it before use.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from malle.errors import ConfigError, MalleError
from malle.io import cache
from malle.io import shards as embeddings
from malle.retrieval import indexes
from malle.retrieval.metrics import METRICS, Metric
from malle.scale.ray_cluster import connect

MANIFEST = "ondisk.json"
FORMAT = "malle-ondisk-ivf"
VERSION = 1
TRAINED = "trained.faiss"
INDEX = "index.faiss"
IVFDATA = "index.ivfdata"
PARTS = "parts"
TRAIN_PER_LIST = 64  # FAISS wants 30 to 256 training points per IVF list; 64 keeps a 2-core machine in minutes
MIN_TRAIN = 10_000  # PQ's 256 centroids per sub-quantizer want ~40 points each
SHARDS_PER_TASK = 16  # 16 x 4,096 rows: a task long enough to pay for its start, short enough to spread


@dataclass(frozen=True)
class BuildPlan:
    embeddings: Path
    factory: str
    out: Path
    train_size: int | None = None  # rows to train on; default max(MIN_TRAIN, TRAIN_PER_LIST x lists)
    shards_per_task: int = SHARDS_PER_TASK
    seed: int = 0


@dataclass(frozen=True)
class ShardTask:
    """What one add task reads: shard files (with their SHA-256), and the id of the first row."""

    files: tuple[tuple[str, str], ...]
    first_id: int


# -- reading shards -------------------------------------------------------------------------------------
def read_shard(path: Path, sha256: str, dtype) -> np.ndarray:
    """One shard's vectors, refused unless its bytes are those the manifest recorded."""
    if not path.is_file() or cache.file_digest(path) != sha256:
        raise ConfigError(f"embeddings shard {path} is missing or damaged (its SHA-256 differs from the manifest)")
    column = pq.read_table(path, columns=["vector"]).column("vector").combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(dtype, copy=False)


def float_metric(manifest: dict, folder: Path) -> Metric:
    metric = METRICS.get(str(manifest.get("metric")))
    if metric is None or metric.binary:
        raise ConfigError(f"{folder} holds {manifest.get('metric')} codes; an on-disk IVF index is built from "
                          "float embeddings (sscd, sscd_distilled, efficientnet_lite2, resnet50...)")
    return metric


# -- the three steps --------------------------------------------------------------------------------------
def train(plan: BuildPlan, manifest: dict, metric: Metric, log: Callable[[str], None]) -> faiss.Index:
    """An empty index of ``plan.factory``, trained on a seeded sample of whole shards."""
    index = indexes.new_index(indexes.IndexChoice(plan.factory, indexes.default_search_params(plan.factory)),
                              metric, manifest["dim"])
    ivf = ivf_of(index, plan.factory)
    wanted = min(manifest["count"], plan.train_size or max(MIN_TRAIN, TRAIN_PER_LIST * ivf.nlist))
    rng = np.random.default_rng(plan.seed)
    chunks, rows = [], 0
    for number in rng.permutation(len(manifest["shards"])):
        if rows >= wanted:
            break
        shard = manifest["shards"][number]
        chunks.append(read_shard(plan.embeddings / shard["file"], shard["sha256"], metric.dtype))
        rows += len(chunks[-1])
    sample = np.concatenate(chunks)
    sample = sample[np.sort(rng.choice(len(sample), size=wanted, replace=False))]
    log(f"Index: training {plan.factory} on {len(sample):,} of {manifest['count']:,} vectors")
    indexes.train_and_add(index, sample, metric)  # its one-line errors for too few rows; it adds the sample too,
    index.reset()  # so the lists are emptied again: the parts fill them
    return index


def ivf_of(index, factory: str):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        raise ConfigError(f"--factory {factory!r} is not an IVF index; inverted lists on disk need one "
                          "(e.g. IVF1024,PQ32 or IVF4096_HNSW32,PQ64)") from None


def plan_tasks(manifest: dict, shards_per_task: int) -> list[ShardTask]:
    tasks, first_id = [], 0
    shards = manifest["shards"]
    for start in range(0, len(shards), max(1, shards_per_task)):
        group = shards[start:start + shards_per_task]
        tasks.append(ShardTask(tuple((s["file"], s["sha256"]) for s in group), first_id))
        first_id += sum(s["rows"] for s in group)
    return tasks


def add_shards(trained: np.ndarray, folder: str, task: ShardTask, metric_name: str) -> np.ndarray:
    """One task: the trained empty index (serialised) plus these shards, returned serialised."""
    index = faiss.deserialize_index(trained)
    dtype = METRICS[metric_name].dtype
    next_id = task.first_id
    for file, sha in task.files:
        vectors = read_shard(Path(folder) / file, sha, dtype)
        index.add_with_ids(vectors, np.arange(next_id, next_id + len(vectors), dtype=np.int64))
        next_id += len(vectors)
    return faiss.serialize_index(index)


def fill_parts(plan: BuildPlan, trained: faiss.Index, manifest: dict, metric: Metric, ray_address: str | None,
               progress, log: Callable[[str], None]) -> list[Path]:
    """Every shard group added to a copy of the trained index, here or as Ray tasks; the parts on disk."""
    tasks = plan_tasks(manifest, plan.shards_per_task)
    parts = plan.out / PARTS
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    names = [parts / f"part-{number:05d}.faiss" for number in range(len(tasks))]
    blob = faiss.serialize_index(trained)
    args = (str(plan.embeddings.resolve()), metric.name)
    bar = progress(total=manifest["count"], desc=f"Index: adding to {plan.factory}") if progress else None
    try:
        for number, serialised in run_tasks(blob, tasks, args, ray_address, log):
            cache.write_bytes(names[number], serialised.tobytes())
            if bar is not None:
                bar.update(rows_of(manifest, tasks, number))
    finally:
        if bar is not None:
            bar.close()  # before any error message, which would otherwise follow the bar on its line
    return names


def rows_of(manifest: dict, tasks: list[ShardTask], number: int) -> int:
    end = tasks[number + 1].first_id if number + 1 < len(tasks) else manifest["count"]
    return end - tasks[number].first_id


def run_tasks(blob: np.ndarray, tasks: list[ShardTask], args: tuple, ray_address: str | None,
              log: Callable[[str], None]):
    """(task number, serialised part) as each task finishes: Ray tasks on a cluster, else one by one here."""
    if not ray_address:
        for number, task in enumerate(tasks):
            yield number, add_shards(blob, args[0], task, args[1])
        return
    ray = connect(ray_address, log)
    remote = ray.remote(num_cpus=1)(add_shards)
    trained_ref = ray.put(blob)  # sent to the object store once, not once per task
    pending = {remote.remote(trained_ref, args[0], task, args[1]): number for number, task in enumerate(tasks)}
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        try:
            part = ray.get(done)
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, MalleError):  # a damaged shard: its one line, not the worker's traceback
                raise err.cause from None
            raise
        yield pending.pop(done), part


def merge(trained: faiss.Index, parts: Sequence[Path], out: Path) -> faiss.Index:
    """The parts' inverted lists, list by list in part order, into ``index.ivfdata``; the header into
    ``index.faiss``. Both are built under temporary names and renamed into place."""
    from faiss.contrib.ondisk import merge_ondisk

    index = faiss.clone_index(trained)
    staging = out / f".merging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    # The lists file keeps its final name (index.faiss records it; open_index finds it beside the header).
    merge_ondisk(index, [str(p) for p in parts], str(staging / IVFDATA))
    faiss.write_index(index, str(staging / INDEX))
    os.replace(staging / IVFDATA, out / IVFDATA)
    os.replace(staging / INDEX, out / INDEX)
    staging.rmdir()
    return index


# -- the whole build ---------------------------------------------------------------------------------------
def build(plan: BuildPlan, ray_address: str | None = None, progress=None,
          log: Callable[[str], None] = print) -> dict:
    """Train, add in tasks, merge on disk; returns the manifest written to ``plan.out``."""
    source = embeddings.read_manifest(plan.embeddings)
    metric = float_metric(source, plan.embeddings)
    if source["count"] == 0:
        raise ConfigError(f"{plan.embeddings} holds no embeddings")
    out = cache.ensure_writable_dir(plan.out, "--out")
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one is written, the folder reads as incomplete
    trained = train(plan, source, metric, log)
    cache.write_bytes(out / TRAINED, faiss.serialize_index(trained).tobytes())
    parts = fill_parts(plan, trained, source, metric, ray_address, progress, log)
    index = merge(trained, parts, out)
    shutil.rmtree(out / PARTS)
    if index.ntotal != source["count"]:
        raise RuntimeError(f"merged {index.ntotal} vectors from {source['count']} embeddings")
    ivf = faiss.extract_index_ivf(index)
    manifest = {"format": FORMAT, "version": VERSION, "factory": plan.factory, "metric": metric.name,
                "dim": source["dim"], "count": int(index.ntotal), "lists": int(ivf.nlist),
                "search_params": indexes.default_search_params(plan.factory), "method": source["method"],
                "label": source.get("label"), "embeddings": str(plan.embeddings.resolve()),
                "fingerprint": source.get("fingerprint"), "precision": source.get("precision"),
                "embeddings_manifest_sha256": cache.file_digest(plan.embeddings / embeddings.MANIFEST),
                "files": {name: {"sha256": cache.file_digest(out / name), "bytes": (out / name).stat().st_size}
                          for name in (TRAINED, INDEX, IVFDATA)}}
    cache.write_json(out / MANIFEST, manifest)
    log(f"Index: {manifest['count']:,} vectors in {manifest['lists']:,} lists on disk "
        f"({manifest['files'][IVFDATA]['bytes'] / 2**20:,.1f} MiB in {out / IVFDATA})")
    return manifest


# -- using it ------------------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict:
    try:
        manifest = cache.read_json(Path(folder) / MANIFEST)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{folder} is not a finished on-disk index ({MANIFEST}: {err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{Path(folder) / MANIFEST} is not a Malle on-disk index manifest")
    return manifest


def open_index(folder: Path, verify_lists: bool = False) -> tuple[faiss.Index, dict]:
    """The merged index, its lists memory-mapped from ``index.ivfdata`` beside it, search parameters set.
    The header's SHA-256 and the lists' size are checked always, the lists' SHA-256 with ``verify_lists``
    (it reads the whole file)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    recorded = manifest["files"]
    for name in (INDEX, IVFDATA):
        path = folder / name
        if not path.is_file() or path.stat().st_size != recorded[name]["bytes"]:
            raise ConfigError(f"{path} is missing or not the size {MANIFEST} records: rebuild the index")
    checked = (INDEX, IVFDATA) if verify_lists else (INDEX,)
    for name in checked:
        if cache.file_digest(folder / name) != recorded[name]["sha256"]:
            raise ConfigError(f"{folder / name} is damaged (its SHA-256 differs from {MANIFEST}): rebuild the index")
    index = faiss.read_index(str(folder / INDEX), faiss.IO_FLAG_ONDISK_SAME_DIR)
    indexes.set_search_params(index, manifest["search_params"], METRICS[manifest["metric"]])
    return index, manifest

"""Embeddings on disk: a folder of Parquet shards that ``python -m malle embed`` writes and
``--db-extra`` reads back instead of encoding again.

A folder holds ``embeddings.json`` (the method, its label, dimension, metric,
precision and fingerprint digest, and every shard with its row count and SHA-256)
and shards ``part-00000.parquet``... with the columns ``path`` (string), ``method``
(string) and ``vector`` (a fixed-size list: float32 for embeddings, uint8 for packed
hash bits). Shards are written atomically and the manifest last, so a folder
without one is incomplete; loading verifies every digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from malle.descriptors import Descriptor
from malle.errors import ConfigError
from malle.io import cache
from malle.retrieval.metrics import metric_named

MANIFEST = "embeddings.json"
FORMAT = "malle-embeddings"
VERSION = 1
SHARD_ROWS = 4096  # about 8 MB of 512-d float32 per shard: small enough to write often, few enough to list


@dataclass
class Embeddings:
    paths: list[str]
    vectors: np.ndarray
    manifest: dict


def is_embeddings_folder(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def shard_table(method: str, paths: Sequence[str], vectors: np.ndarray) -> pa.Table:
    width = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors).ravel())
    return pa.table({
        "path": pa.array(list(paths), pa.string()),
        "method": pa.array([method] * len(paths), pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, width),
    })


def describe_method(desc: Descriptor) -> dict:
    """What a reader must match: method, dimension, metric; and what it should know: precision, fingerprint."""
    return {"format": FORMAT, "version": VERSION, "method": desc.name, "label": desc.label, "dim": desc.dim,
            "metric": desc.metric.name, "precision": desc.precision,
            "fingerprint": cache.fingerprint(desc.fingerprint())}


def write(folder: Path, desc: Descriptor, paths: Sequence[str], vectors: np.ndarray,
          skipped: pd.DataFrame | None = None) -> dict:
    """Shards of ``SHARD_ROWS`` rows in input order, then the manifest; returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # until the new one is written, the folder reads as incomplete
    shards = []
    for number, start in enumerate(range(0, max(len(paths), 1), SHARD_ROWS)):
        part = slice(start, start + SHARD_ROWS)
        name = shard_name(number)
        cache.write_arrow(folder / name, shard_table(desc.name, paths[part], vectors[part]))
        shards.append({"file": name, "rows": len(paths[part]), "sha256": cache.file_digest(folder / name)})
    if skipped is not None:
        cache.write_table(folder / "skipped.csv", skipped)
    manifest = {**describe_method(desc), "count": len(paths), "shards": shards,
                "skipped": 0 if skipped is None else len(skipped)}
    cache.write_json(folder / MANIFEST, manifest)
    listed = {shard["file"] for shard in shards}
    for stale in folder.glob("part-*.parquet"):  # shards of an earlier, larger run of the same folder
        if stale.name not in listed:
            stale.unlink()
    return manifest


def read(folder: Path, desc: Descriptor | None = None) -> Embeddings:
    """Every shard, verified against the manifest; with ``desc``, refused unless method and dimension match."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if desc is not None:
        check_matches(manifest, desc, folder)
    paths: list[str] = []
    chunks: list[np.ndarray] = []
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        if not path.is_file() or cache.file_digest(path) != shard["sha256"]:
            raise ConfigError(f"embeddings shard {path} is missing or damaged (its SHA-256 differs from the manifest)")
        table = pq.read_table(path)
        width = table.schema.field("vector").type.list_size
        vectors = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        chunks.append(vectors.reshape(-1, width))
        paths += table.column("path").to_pylist()
    dtype = metric_named(str(manifest.get("metric"))).dtype
    vectors = np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.zeros((0, 0), dtype)
    return Embeddings(paths, vectors, manifest)


def read_manifest(folder: Path) -> dict:
    try:
        manifest = cache.read_json(Path(folder) / MANIFEST)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{folder} is not a Malle embeddings folder ({MANIFEST}: {err})") from None
    valid = isinstance(manifest, dict) and manifest.get("format") == FORMAT and isinstance(manifest.get("shards"), list)
    if not valid:
        raise ConfigError(f"{Path(folder) / MANIFEST} is not a Malle embeddings manifest")
    return manifest


def check_matches(manifest: dict, desc: Descriptor, folder: Path) -> None:
    if manifest.get("method") != desc.name:
        raise ConfigError(f"embeddings in {folder} were made by {manifest.get('method')!r}, not {desc.name!r}; "
                          f"embed the folder with --method {desc.name}")
    if manifest.get("dim") != desc.dim:
        raise ConfigError(f"embeddings in {folder} have dimension {manifest.get('dim')}, {desc.name} makes {desc.dim}")


def fingerprint_differs(manifest: dict, desc: Descriptor) -> bool:
    """Same method and dimension but another precision, weights or library version."""
    return manifest.get("fingerprint") != cache.fingerprint(desc.fingerprint())

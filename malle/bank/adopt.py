"""An index that ``malle index-build`` wrote, taken as a collection's snapshot once it is checked to be of the
collection's method, fingerprint, metric, dimension and factory string (a one-line ``ConfigError`` otherwise).

``index-build`` numbers its vectors by their row in the embeddings folder it read. The bank finds each row's item by
the SHA-256 of the code's bytes (the bytes ``bank add --from-embeddings`` stored), so neither the order nor the way
the items were added matters; every row must be an item of the collection. The snapshot takes the version just
before the first live item no row holds and the first removed item a row still holds, so the delta scores the
first exactly and drops the second, as for any snapshot.

The header and lists files are hard-linked (copied across file systems) into ``indexes/<stem>/`` under the names
FAISS recorded in the header, checked against the build's manifest, and mapped from there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from malle.bank import approx
from malle.errors import ConfigError
from malle.io import cache
from malle.retrieval.metrics import METRICS


def adopt(coll, folder: Path, everything: approx.CodeSource, versions: np.ndarray, indexes_dir: Path, stem: str,
          log: Callable[[str], None]) -> dict:
    """The fields of a ``Snapshot`` (``malle.bank.snapshots``) of the index in ``folder`` (see the module);
    ``everything`` holds every item of the collection, removed ones too, and ``versions`` each one's (id, added
    version, removed version or -1)."""
    from malle.scale import ondisk

    manifest = ondisk.read_manifest(folder)
    check(coll, folder, manifest)
    rows = row_items(coll, folder, manifest, everything)
    metric = METRICS[coll.metric]
    ondisk_copy(folder, manifest, indexes_dir / stem)
    index = approx.read_mapped(indexes_dir / stem / ondisk.INDEX, metric, manifest["search_params"], True)
    version = version_for(coll.version, rows, versions)
    live = versions[:, 2] < 0
    covered = np.isin(everything.ids, rows) & np.isin(everything.ids, versions[live, 0])
    source = approx.CodeSource(everything.codes, everything.ids[covered], everything.records[covered])
    recall, sample = approx.measure_recall(index, rows, metric, source, version)
    log(f"Bank: {coll.name}: took {manifest['factory']} of {len(rows):,} codes from {folder} (recall@10 against "
        f"exact search {recall if recall is None else round(recall, 3)} on {sample} queries)")
    return {"uid": coll.uid, "version": version, "index": index, "ids": rows,
            "factory": f"{manifest['factory']} ({manifest['search_params']})", "recall_at_10": recall,
            "recall_sample": sample, "mapped": f"{stem}/{ondisk.INDEX}", "lists": f"{stem}/{ondisk.IVFDATA}",
            "search_params": manifest["search_params"]}


def check(coll, folder: Path, manifest: dict) -> None:
    """Method, metric, dimension, factory string and fingerprint, each refused in its own line."""
    said = {"method": coll.method, "metric": coll.metric, "dim": coll.dim, "factory": coll.index_factory}
    for key, want in said.items():
        if manifest.get(key) != want:
            raise ConfigError(f"{folder} holds an index with {key} {manifest.get(key)!r}; collection {coll.name!r} "
                              f"has {want!r}" + (f" (create it with --index {manifest.get(key)})"
                                                 if key == "factory" else ""))
    if fingerprint_of(folder, manifest) != coll.fingerprint_digest:
        raise ConfigError(f"{folder} was built from {coll.method} embeddings of another fingerprint (another model, "
                          f"precision or library version) than collection {coll.name!r}'s codes")


def fingerprint_of(folder: Path, manifest: dict) -> str | None:
    """The method fingerprint the build recorded, else that of its embeddings folder if unchanged since."""
    if manifest.get("fingerprint"):
        return manifest["fingerprint"]
    source = Path(str(manifest.get("embeddings")))
    try:
        if cache.file_digest(source / "embeddings.json") == manifest.get("embeddings_manifest_sha256"):
            return cache.read_json(source / "embeddings.json").get("fingerprint")
    except (OSError, ValueError):
        pass
    raise ConfigError(f"{folder} records no method fingerprint and its embeddings folder {source} is gone or "
                      "changed; build it again with this Malle's `malle index-build`")


def row_items(coll, folder: Path, manifest: dict, everything: approx.CodeSource) -> np.ndarray:
    """The item id of every row of the index, by the SHA-256 of its code."""
    from malle.io import shards
    from malle.scale import ondisk

    by_digest: dict[bytes, list[int]] = {}
    for start, codes in everything.chunks():
        for item_id, code in zip(everything.ids[start:start + len(codes)], codes):
            by_digest.setdefault(hashlib.sha256(code.tobytes()).digest(), []).append(int(item_id))
    source = Path(str(manifest.get("embeddings")))
    try:
        embedded = shards.read_manifest(source)
    except ConfigError:
        raise ConfigError(f"{folder} was built from {source}, which is gone: the bank needs it to match rows "
                          "to items") from None
    rows, missing = [], 0
    for shard in embedded["shards"]:
        for vector in ondisk.read_shard(source / shard["file"], shard["sha256"], np.dtype(coll.dtype)):
            found = by_digest.get(hashlib.sha256(np.ascontiguousarray(vector).tobytes()).digest())
            missing += not found
            rows.append(found.pop() if found else -1)
    if missing or len(rows) != manifest["count"]:
        raise ConfigError(f"{missing:,} of the {manifest['count']:,} vectors of {folder} are not codes of collection "
                          f"{coll.name!r}; add them first (`malle bank add --from-embeddings {source}`)")
    return np.asarray(rows, dtype=np.int64)


def ondisk_copy(folder: Path, manifest: dict, target: Path) -> None:
    """The header and lists files under ``target`` (hard links where the file system allows), checked."""
    from malle.scale import ondisk

    target.mkdir(parents=True, exist_ok=True)
    for name in (ondisk.INDEX, ondisk.IVFDATA):
        (target / name).unlink(missing_ok=True)
        try:
            os.link(folder / name, target / name)
        except OSError:
            shutil.copyfile(folder / name, target / name)
        if cache.file_digest(target / name) != manifest["files"][name]["sha256"]:
            raise ConfigError(f"{folder / name} is damaged (its SHA-256 differs from {ondisk.MANIFEST}): rebuild it")


def version_for(current: int, rows: np.ndarray, versions: np.ndarray) -> int:
    """The newest version at which the snapshot holds exactly the live items (see the module)."""
    ids, added, removed = versions[:, 0], versions[:, 1], versions[:, 2]
    held = np.isin(ids, rows)
    late = np.concatenate([added[~held & (removed < 0)], removed[held & (removed >= 0)], [current + 1]])
    return int(max(0, late.min() - 1))

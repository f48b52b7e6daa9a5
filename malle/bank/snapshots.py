"""Per-collection FAISS indexes: a cache of the database, in memory and on disk, swapped in atomically.

A ``Snapshot`` is an index built from a collection's live codes at one ``version``, never changed after
it is built, with the item id of every row. Matching searches the current snapshot and then the database's
changes since its version: codes added later are scored directly (a small brute-force delta) and items
removed later are dropped, so a match always reflects every committed add and remove, from this process
or another, without waiting for an index. When the delta grows past ``REBUILD_AFTER`` items, a background
thread builds a new snapshot from the database and replaces the reference; matches in flight keep the old
one, so nothing waits or fails during a rebuild (the shape of HMA's index swap).

On disk, next to the database: ``indexes/<name>.faiss`` (FAISS's own format, written atomically),
``<name>.ids.npy`` and last ``<name>.json`` (collection uid, version, count, factory, and both files'
SHA-256). A file that is missing, unreadable, for another collection, or not as recorded is rebuilt from
the database with one notice; a stale one is used with the delta and replaced in the background.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from malle.bank.store import Collection, NotFound, Store, now
from malle.errors import ConfigError
from malle.io import cache
from malle.retrieval import indexes
from malle.retrieval.metrics import METRICS, Metric
from malle.retrieval.topk import save_index, search

INDEX_DIR = "indexes"
REBUILD_AFTER = 256  # changes since the snapshot before a background rebuild; the delta is scanned per match


@dataclass(frozen=True)
class Snapshot:
    uid: str
    version: int
    index: object  # a FAISS index, read-only once built
    ids: np.ndarray  # item id of each row, ascending, so FAISS's row tie rule is the item id order
    factory: str  # the index actually built, e.g. "Flat" or "HNSW32 (efSearch=128)"


@dataclass(frozen=True)
class RankedItems:
    """One query's matches: item ids and native scores, best first (ties: lower id first)."""

    ids: np.ndarray
    scores: np.ndarray


def metric_of(coll: Collection) -> Metric:
    return METRICS[coll.metric]


def build(coll: Collection, ids: np.ndarray, codes: np.ndarray, log: Callable[[str], None]) -> Snapshot:
    """An index over ``codes`` as the collection's factory string asks; exact Flat while too few items exist
    to train an IVF or PQ index (said once)."""
    metric = metric_of(coll)
    try:  # a bank written before strings were checked may hold one that kills FAISS: search it exactly instead
        indexes.check(coll.index_factory, metric, coll.dim)
    except ConfigError as err:
        log(f"Bank: {coll.name}: {err}; searching it exactly")
        return Snapshot(coll.uid, coll.version, metric.build_index(codes), ids, indexes.EXACT)
    choice = indexes.choose(coll.index_factory, len(codes), coll.dim, metric)
    if choice.exact or len(codes) == 0:
        return Snapshot(coll.uid, coll.version, metric.build_index(codes), ids, indexes.EXACT)
    index = indexes.new_index(choice, metric, coll.dim)
    try:
        indexes.train_and_add(index, codes, metric)
    except ConfigError as err:
        log(f"Bank: {coll.name}: {err}; searching it exactly until it grows")
        return Snapshot(coll.uid, coll.version, metric.build_index(codes), ids, indexes.EXACT)
    return Snapshot(coll.uid, coll.version, index, ids, choice.describe())


class Snapshots:
    """The current snapshot of every collection in one bank, their files, and background rebuilds."""

    def __init__(self, store: Store, log: Callable[[str], None]) -> None:
        self.store, self.log = store, log
        self.folder = store.folder / INDEX_DIR
        self._current: dict[str, Snapshot] = {}  # replaced whole, never mutated: readers need no lock
        self._building: dict[str, threading.Thread] = {}
        self._again: set[str] = set()
        self._lock = threading.Lock()  # guards _building/_again and the first load of a collection
        self._load_locks: dict[str, threading.Lock] = {}

    # -- reading ----------------------------------------------------------------------------------------------
    def current(self, coll: Collection) -> Snapshot:
        """The snapshot in memory, else the one on disk, else one built now (once per collection)."""
        snap = self._current.get(coll.name)
        if snap is not None and snap.uid == coll.uid:
            return snap
        with self._lock:
            gate = self._load_locks.setdefault(coll.name, threading.Lock())
        with gate:
            snap = self._current.get(coll.name)
            if snap is None or snap.uid != coll.uid:
                snap = self._load(coll)
                if snap is None:
                    snap = self.rebuild(coll.name)
                self._current[coll.name] = snap
        return snap

    def rank(self, coll: Collection, queries: np.ndarray, k: int) -> list[RankedItems]:
        """Top-``k`` per query over the snapshot plus the database's changes since it; schedules a rebuild
        when those changes are many."""
        snap = self.current(coll)
        with self.store.reading() as db:
            now_coll = self.store.collection(coll.name, db, count=False)
            if now_coll.uid != snap.uid:  # deleted and created again by another process
                self._current.pop(coll.name, None)
                return self.rank(now_coll, queries, k)
            fresh_ids, fresh_codes, removed = (self.store.changed_since(now_coll, snap.version, db)
                                               if now_coll.version != snap.version else _no_changes(coll))
        if len(fresh_ids) + len(removed) >= REBUILD_AFTER:
            self.schedule(coll.name)
        return _merge(snap, metric_of(coll), queries, k, fresh_ids, fresh_codes, removed)

    def pending(self, name: str) -> int:
        """Items added or removed since the snapshot in memory (0 when none is loaded: the first match loads
        the index and scores whatever is newer directly)."""
        snap = self._current.get(name)
        if snap is None:
            return 0
        row = self.store.db.execute("SELECT COUNT(*) FROM items WHERE collection = ? AND (added_version > ? OR "
                                    "removed_version > ?)", (name, snap.version, snap.version)).fetchone()
        return row[0]

    def rebuild_due(self, name: str) -> bool:
        return self.pending(name) >= REBUILD_AFTER

    # -- files ------------------------------------------------------------------------------------------------
    def paths(self, name: str) -> tuple[Path, Path, Path]:
        return self.folder / f"{name}.faiss", self.folder / f"{name}.ids.npy", self.folder / f"{name}.json"

    def state(self, coll: Collection) -> str:
        """What the file on disk is: 'current', 'stale (version v of w)', or why it would be rebuilt."""
        record, problem = self._record(coll)
        if problem:
            return problem
        return "current" if record["version"] == coll.version else f"stale (version {record['version']} " \
                                                                    f"of {coll.version})"

    def _record(self, coll: Collection) -> tuple[dict, str | None]:
        index_path, ids_path, meta_path = self.paths(coll.name)
        if not meta_path.is_file():
            return {}, "missing"
        try:
            record = cache.read_json(meta_path)
        except (OSError, ValueError):
            return {}, "damaged (its record is unreadable)"
        if not isinstance(record, dict) or record.get("uid") != coll.uid:
            return {}, "for another collection of that name"
        for path, key in ((index_path, "faiss_sha256"), (ids_path, "ids_sha256")):
            if not path.is_file() or cache.file_digest(path) != record.get(key):
                return {}, f"damaged ({path.name} is missing or differs from its record)"
        if not isinstance(record.get("version"), int) or record["version"] > coll.version:
            return {}, "damaged (its version is ahead of the database)"
        return record, None

    def _load(self, coll: Collection) -> Snapshot | None:
        """The index on disk when it is this collection's and intact; None (with one notice) otherwise."""
        record, problem = self._record(coll)
        if problem is None:
            index_path, ids_path, _ = self.paths(coll.name)
            try:
                index = metric_of(coll).read_index(index_path)
                ids = cache.read_npy(ids_path)
            except (RuntimeError, ValueError, OSError) as err:
                problem = f"damaged ({type(err).__name__})"
            else:
                if index.d == coll.dim and ids.dtype == np.int64 and len(ids) == index.ntotal:
                    return Snapshot(coll.uid, record["version"], index, ids, record.get("factory", "Flat"))
                problem = "damaged (its size or dimension differs from the database)"
        if problem != "missing" or coll.count:
            self.log(f"Bank: the index of {coll.name!r} is {problem}; rebuilding it from the database.")
        return None

    def _save(self, coll: Collection, snap: Snapshot) -> None:
        """Write the snapshot's files unless a newer one is there already (another process)."""
        index_path, ids_path, meta_path = self.paths(coll.name)
        with self.store.exclusive():
            record, problem = self._record(coll)
            if problem is None and record["version"] >= snap.version:
                return
            save_index(snap.index, index_path, metric_of(coll))
            cache.write_npy(ids_path, snap.ids)
            cache.write_json(meta_path, {"uid": snap.uid, "version": snap.version, "count": len(snap.ids),
                                         "factory": snap.factory, "built": now(),
                                         "faiss_sha256": cache.file_digest(index_path),
                                         "ids_sha256": cache.file_digest(ids_path)})

    def forget(self, name: str) -> None:
        """Drop a deleted collection's snapshot and files."""
        self._current.pop(name, None)
        with self.store.exclusive():
            for path in self.paths(name):
                path.unlink(missing_ok=True)

    # -- rebuilding -----------------------------------------------------------------------------------------
    def rebuild(self, name: str) -> Snapshot:
        """Build from the database now, write the files, swap the reference; returns the new snapshot."""
        with self.store.reading() as db:
            coll = self.store.collection(name, db)
            ids, codes = self.store.codes(coll, db)
        snap = build(coll, ids, codes, self.log)
        self._save(coll, snap)
        old = self._current.get(name)
        if old is None or old.uid != snap.uid or old.version <= snap.version:
            self._current[name] = snap  # one reference assignment: readers see the old or the new
        return snap

    def schedule(self, name: str) -> None:
        """Rebuild in a background thread; a request during a build runs one more build after it."""
        with self._lock:
            running = self._building.get(name)
            if running is not None and running.is_alive():
                self._again.add(name)
                return
            thread = threading.Thread(target=self._rebuild_loop, args=(name,), name=f"bank-index-{name}",
                                      daemon=True)
            self._building[name] = thread
        thread.start()

    def _rebuild_loop(self, name: str) -> None:
        while True:
            try:
                self.rebuild(name)
            except NotFound:
                return  # deleted meanwhile
            with self._lock:
                if name not in self._again:
                    self._building.pop(name, None)
                    return
                self._again.discard(name)

    def wait(self) -> None:
        """Until background rebuilds end (the CLI before exit, tests)."""
        while True:
            with self._lock:
                threads = [t for t in self._building.values() if t.is_alive()]
            if not threads:
                return
            for thread in threads:
                thread.join()


def _no_changes(coll: Collection):
    return np.zeros(0, np.int64), np.zeros((0, coll.width), np.dtype(coll.dtype)), np.zeros(0, np.int64)


def _merge(snap: Snapshot, metric: Metric, queries: np.ndarray, k: int, fresh_ids: np.ndarray,
           fresh_codes: np.ndarray, removed: np.ndarray) -> list[RankedItems]:
    """The snapshot's top hits less removed items, with the fresh codes scored directly, best first."""
    hits = search(snap.index, queries, k + len(removed), metric)
    rows = hits.ids
    snap_ids = np.where(rows >= 0, snap.ids[np.clip(rows, 0, max(len(snap.ids) - 1, 0))], -1) if len(snap.ids) \
        else np.zeros(rows.shape, np.int64)
    fresh_scores = _scores(metric, queries, fresh_codes)
    out = []
    for q in range(len(queries)):
        keep = (snap_ids[q] >= 0) & ~np.isin(snap_ids[q], removed)
        ids = np.concatenate([snap_ids[q][keep], fresh_ids])
        scores = np.concatenate([hits.scores[q][keep].astype(np.float64), fresh_scores[q]])
        order = np.lexsort((ids, metric.sort_key(scores)))[:k]
        out.append(RankedItems(ids[order], scores[order].astype(metric.score_dtype)))
    return out


def _scores(metric: Metric, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(n_queries, n_codes) scores; a multi-variant query keeps each code's best variant."""
    if len(codes) == 0:
        return np.zeros((len(queries), 0))
    if queries.ndim == 2:
        return metric.compare(queries, codes).astype(np.float64)
    per_variant = np.stack([metric.compare(queries[:, v], codes) for v in range(queries.shape[1])], axis=1)
    best = np.argmin(metric.sort_key(per_variant), axis=1)
    return np.take_along_axis(per_variant, best[:, None], 1)[:, 0].astype(np.float64)

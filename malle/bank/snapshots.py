"""Per-collection FAISS indexes: a cache of the database, in memory and on disk, swapped in atomically.

A ``Snapshot`` is an index built from a collection's live codes at one ``version``, never changed after
it is built, with the item id of every row. Matching searches the current snapshot and then the database's
changes since its version: codes added later are scored directly (a small brute-force delta) and items
removed later are dropped, so a match always reflects every committed add and remove, from this process
or another, without waiting for an index. When the delta grows past ``REBUILD_AFTER`` items, a background
thread builds a new snapshot from the database and replaces the reference; matches in flight keep the old
one, so nothing waits or fails during a rebuild (the shape of HMA's index swap).

On disk, next to the database: per snapshot ``indexes/<name>.<uid>.v<version>.<token>.faiss`` (FAISS's own format,
written atomically, never changed) and ``....ids.npy``, and last ``<name>.json``, the record: collection uid,
version, count, factory, search parameters, the files and their SHA-256, and the recall measured at build time. The
files of the snapshot before are kept until the next one, so another process that has just read the old record
still finds them. A file that is missing, unreadable, for another collection, or not as recorded is rebuilt from
the database with one notice; a stale one is used with the delta and replaced in the background.

IVF indexes keep their inverted lists in the file and map them (``malle.bank.approx``): built from the codes file
in chunks, shared by every process that searches them, with their recall against exact search recorded in the
record and in the collection's row. One can also be taken from ``malle index-build`` (``malle.bank.adopt``).
"""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import filelock
import numpy as np

from malle.bank import approx
from malle.bank.store import Collection, NotFound, Store, now
from malle.errors import ConfigError
from malle.io import cache
from malle.retrieval import indexes
from malle.retrieval.metrics import METRICS, Metric
from malle.retrieval.topk import save_index, search

INDEX_DIR = "indexes"
REBUILD_AFTER = 256  # changes since the snapshot before a background rebuild; the delta is scanned per match
# An index with mapped lists is rebuilt once a thousandth of it changed (at least REBUILD_AFTER): a million codes take
# minutes to rebuild on 2 cores, while a thousand fresh codes cost a match about a millisecond to scan.
DELTA_SHARE = 1000


@dataclass(frozen=True)
class Snapshot:
    uid: str
    version: int
    index: object  # a FAISS index, read-only once built
    ids: np.ndarray  # item id of each row, ascending, so FAISS's row tie rule is the item id order
    factory: str  # the index actually built, e.g. "Flat" or "HNSW32 (efSearch=128)"
    recall_at_10: float | None = None  # against exact search, measured when built; None: exact
    recall_sample: int = 0
    mapped: str | None = None  # the file under indexes/ its lists are mapped from; None: all in memory
    lists: str | None = None  # a separate lists file beside it (an index taken from `malle index-build`)
    search_params: str = ""

    def delta_limit(self) -> int:
        return REBUILD_AFTER if self.mapped is None else max(REBUILD_AFTER, len(self.ids) // DELTA_SHARE)


@dataclass(frozen=True)
class RankedItems:
    """One query's matches: item ids and native scores, best first (ties: lower id first)."""

    ids: np.ndarray
    scores: np.ndarray


def metric_of(coll: Collection) -> Metric:
    return METRICS[coll.metric]


def build(coll: Collection, source: approx.CodeSource, folder: Path, log: Callable[[str], None],
          proven: bool = False) -> Snapshot:
    """An index over the live codes of ``source`` as the collection's factory string asks; exact Flat while too few
    items exist to train an IVF or PQ index (said once). IVF lists are written under ``folder`` and mapped.
    ``proven``: an earlier snapshot was built with this string, so it need not be probed again (a probe of a PQ
    string takes minutes of CPU on a busy 2-core machine, and one that times out would mean exact search)."""
    metric = metric_of(coll)
    try:  # a bank written before strings were checked may hold one that kills FAISS: search it exactly instead
        if not proven:
            indexes.check(coll.index_factory, metric, coll.dim)
    except ConfigError as err:
        log(f"Bank: {coll.name}: {err}; searching it exactly")
        return exact(coll, source)
    choice = indexes.choose(coll.index_factory, len(source), coll.dim, metric)
    if choice.exact or len(source) == 0:
        return exact(coll, source)
    mapped = f"{stem(coll.name, coll.uid, coll.version)}.faiss" if approx.uses_lists(choice.factory) else None
    try:
        if mapped:
            index = approx.build_lists(choice, coll.dim, metric, source, folder / mapped, coll.version)
        else:
            index = indexes.new_index(choice, metric, coll.dim)
            indexes.train_and_add(index, source.all(), metric)
    except ConfigError as err:
        log(f"Bank: {coll.name}: {err}; searching it exactly until it grows")
        return exact(coll, source)
    recall, sample, params = approx.tune_probes(index, choice, source.ids, metric, source, coll.version)
    return Snapshot(coll.uid, coll.version, index, source.ids, indexes.IndexChoice(choice.factory, params).describe(),
                    recall, sample, mapped, search_params=params)


def exact(coll: Collection, source: approx.CodeSource) -> Snapshot:
    return Snapshot(coll.uid, coll.version, metric_of(coll).build_index(source.all()), source.ids, indexes.EXACT)


def stem(name: str, uid: str, version: int) -> str:
    """The start of a snapshot's file names: unique per build, so two processes never write the same file."""
    return f"{name}.{uid}.v{version}.{secrets.token_hex(4)}"


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

    def follow(self, names: list[str] | None = None) -> list[str]:
        """Take up the snapshot another process published, for each collection in memory (or ``names``) whose record
        on disk is newer than what this process holds: processes serving one bank (``malle serve --workers``) then
        map the same files, whichever of them built it. Returns the names swapped."""
        swapped = []
        for name in names if names is not None else list(self._current):
            held = self._current.get(name)
            try:
                record = cache.read_json(self.folder / f"{name}.json")
                if held is None or not isinstance(record, dict) or record.get("uid") != held.uid or \
                        not isinstance(record.get("version"), int) or record["version"] <= held.version:
                    continue
                fresh = self._load(self.store.collection(name, count=False))
            except (OSError, ValueError, NotFound):
                continue  # no record yet, one being replaced, or the collection deleted: nothing to take up
            if fresh is not None and fresh.version > held.version and self._current.get(name) is held:
                self._current[name] = fresh  # one reference assignment, as a rebuild's
                swapped.append(name)
        return swapped

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
        if len(fresh_ids) + len(removed) >= snap.delta_limit():
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
        snap = self._current.get(name)
        return snap is not None and self.pending(name) >= snap.delta_limit()

    # -- files ------------------------------------------------------------------------------------------------
    def paths(self, name: str) -> tuple[Path, Path, Path]:
        """The current snapshot's index and ids files as its record names them, and the record."""
        meta = self.folder / f"{name}.json"
        try:
            files = cache.read_json(meta)["files"]
            return self.folder / files["index"], self.folder / files["ids"], meta
        except (OSError, ValueError, KeyError, TypeError):
            return self.folder / f"{name}.faiss", self.folder / f"{name}.ids.npy", meta

    def state(self, coll: Collection) -> str:
        """What the file on disk is: 'current', 'stale (version v of w)', or why it would be rebuilt."""
        record, problem = self._record(coll)
        if problem:
            return problem
        return "current" if record["version"] == coll.version else f"stale (version {record['version']} " \
                                                                    f"of {coll.version})"

    def _record(self, coll: Collection) -> tuple[dict, str | None]:
        meta_path = self.folder / f"{coll.name}.json"
        if not meta_path.is_file():
            return {}, "missing"
        try:
            record = cache.read_json(meta_path)
        except (OSError, ValueError):
            return {}, "damaged (its record is unreadable)"
        if not isinstance(record, dict) or record.get("uid") != coll.uid:
            return {}, "for another collection of that name"
        files, digests = record.get("files"), record.get("sha256")
        if not isinstance(files, dict) or not isinstance(digests, dict) or not {"index", "ids"} <= set(files):
            return {}, "written by an older Malle (its record names no files)"
        for name in files.values():
            path = self.folder / str(name)
            if not path.is_file() or cache.file_digest(path) != digests.get(name):
                return {}, f"damaged ({name} is missing or differs from its record)"
        if not isinstance(record.get("version"), int) or record["version"] > coll.version:
            return {}, "damaged (its version is ahead of the database)"
        return record, None

    def _load(self, coll: Collection) -> Snapshot | None:
        """The index on disk when it is this collection's and intact; None (with one notice) otherwise."""
        record, problem = self._record(coll)
        if problem is None:
            files, metric = record["files"], metric_of(coll)
            try:
                path = self.folder / files["index"]
                index = approx.read_mapped(path, metric, record.get("search_params", ""), "lists" in files) \
                    if record.get("mapped") else approx.read_shared(path, metric)
                ids = cache.read_npy(self.folder / files["ids"])
            except (RuntimeError, ValueError, OSError, ConfigError) as err:
                problem = f"damaged ({type(err).__name__})"
            else:
                if index.d == coll.dim and ids.dtype == np.int64 and len(ids) == index.ntotal:
                    return Snapshot(coll.uid, record["version"], index, ids, record.get("factory", "Flat"),
                                    record.get("recall_at_10"), record.get("recall_sample", 0),
                                    files["index"] if record.get("mapped") else None, files.get("lists"),
                                    record.get("search_params", ""))
                problem = "damaged (its size or dimension differs from the database)"
        if problem != "missing" or coll.count:
            self.log(f"Bank: the index of {coll.name!r} is {problem}; rebuilding it from the database.")
        return None

    def _save(self, coll: Collection, snap: Snapshot, force: bool = False) -> None:
        """Write the snapshot's files and record unless a newer one is there already (another process); record its
        recall in the collection's row; remove the files of snapshots before the one it replaces."""
        base = snap.mapped.rsplit(".faiss", 1)[0] if snap.mapped else stem(coll.name, snap.uid, snap.version)
        files = {"index": snap.mapped or f"{base}.faiss", "ids": f"{base.split('/')[0]}.ids.npy"}
        if snap.lists:
            files["lists"] = snap.lists
        with self.store.exclusive():
            record, problem = self._record(coll)
            if problem is None and record["version"] >= snap.version and not force:
                return
            if snap.mapped is None:
                save_index(snap.index, self.folder / files["index"], metric_of(coll))
            cache.write_npy(self.folder / files["ids"], snap.ids)
            cache.write_json(self.folder / f"{coll.name}.json", {
                "uid": snap.uid, "version": snap.version, "count": len(snap.ids), "factory": snap.factory,
                "built": now(), "files": files,
                "sha256": {f: cache.file_digest(self.folder / f) for f in files.values()},
                "mapped": snap.mapped is not None, "search_params": snap.search_params,
                "recall_at_10": snap.recall_at_10, "recall_sample": snap.recall_sample,
                "proven": coll.index_factory if snap.factory != indexes.EXACT else None})
            self._sweep(coll.name, coll.uid, set(files.values()) | set(record.get("files", {}).values()),
                        min(snap.version, record.get("version", snap.version)))
            with self.store.writing() as db:
                db.execute("UPDATE collections SET recall_at_10 = ?, recall_sample = ?, search_params = ? "
                           "WHERE name = ? AND uid = ?", (snap.recall_at_10, snap.recall_sample or None,
                                                         snap.search_params or None, coll.name, coll.uid))

    def _sweep(self, name: str, uid: str, keep: set[str], before: int | None = None) -> None:
        """Files of this collection's snapshots older than version ``before`` (all with None) except ``keep``, and
        those of the layout before versioned names. A newer file may be another process's build in flight."""
        kept = {k.split("/")[0] for k in keep}
        for path in self.folder.iterdir() if self.folder.is_dir() else ():
            version = path.name.removeprefix(f"{name}.{uid}.v").split(".")[0]
            old = path.name.startswith(f"{name}.{uid}.v") and path.name not in kept and \
                (before is None or (version.isdigit() and int(version) < before))
            if old or path.name in (f"{name}.faiss", f"{name}.ids.npy"):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    def forget(self, coll: Collection) -> None:
        """Drop a deleted collection's snapshot, index files and codes file."""
        self._current.pop(coll.name, None)
        with self.store.exclusive():
            self._sweep(coll.name, coll.uid, set())
            (self.folder / f"{coll.name}.json").unlink(missing_ok=True)
            self.store.codes_file(coll).path.unlink(missing_ok=True)

    # -- rebuilding -----------------------------------------------------------------------------------------
    def rebuild(self, name: str) -> Snapshot:
        """Build from the database now, write the files, swap the reference; returns the new snapshot."""
        with self.store.reading() as db:
            coll = self.store.collection(name, db)
            ids, records = self.store.records(coll, db)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            proven = cache.read_json(self.folder / f"{name}.json").get("proven") == coll.index_factory
        except (OSError, ValueError, AttributeError):
            proven = False
        snap = build(coll, approx.CodeSource(self.store.codes_file(coll), ids, records), self.folder, self.log, proven)
        return self.swap(coll, snap)

    def adopt(self, name: str, folder: Path) -> Snapshot:
        """The index ``malle index-build`` wrote to ``folder`` as the collection's snapshot (``malle.bank.adopt``)."""
        from malle.bank import adopt

        with self.store.reading() as db:
            coll = self.store.collection(name, db)
            everything = approx.CodeSource(self.store.codes_file(coll), *self.store.records(coll, db, "1"))
            versions = np.asarray(db.execute("SELECT id, added_version, COALESCE(removed_version, -1) FROM items "
                                             "WHERE collection = ?", (name,)).fetchall(), np.int64).reshape(-1, 3)
        stem_now = stem(coll.name, coll.uid, coll.version)
        fields = adopt.adopt(coll, Path(folder), everything, versions, self.folder, stem_now, self.log)
        return self.swap(coll, Snapshot(**fields), force=True)

    def swap(self, coll: Collection, snap: Snapshot, force: bool = False) -> Snapshot:
        """Save a new snapshot and make it the current one (one reference assignment: readers see old or new);
        ``force`` replaces a newer one (an index taken from `index-build`)."""
        self._save(coll, snap, force)
        name = coll.name
        old = self._current.get(name)
        if force or old is None or old.uid != snap.uid or old.version <= snap.version:
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
                self._rebuild_once(name)
            except NotFound:
                return  # deleted meanwhile
            with self._lock:
                if name not in self._again:
                    self._building.pop(name, None)
                    return
                self._again.discard(name)

    def _rebuild_once(self, name: str) -> None:
        """Rebuild, unless another process is building this collection now or has published a snapshot that leaves
        a small delta: processes serving one bank (``malle serve --workers``) build each snapshot once and all map it
        (``follow``)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        gate = filelock.FileLock(str(self.folder / f"{name}.build.lock"))
        try:
            gate.acquire(blocking=False)
        except filelock.Timeout:
            return  # the other process publishes it; follow() takes it up
        try:
            if not (self.follow([name]) and not self.rebuild_due(name)):
                self.rebuild(name)
        finally:
            gate.release()

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
    hits = search(snap.index, queries, k + len(removed) + (len(fresh_ids) if snap.lists else 0), metric)
    rows = hits.ids
    snap_ids = np.where(rows >= 0, snap.ids[np.clip(rows, 0, max(len(snap.ids) - 1, 0))], -1) if len(snap.ids) \
        else np.zeros(rows.shape, np.int64)
    fresh_scores = _scores(metric, queries, fresh_codes)
    out = []
    for q in range(len(queries)):
        # An item in both (an index taken from `index-build` may hold items newer than its version) counts once.
        keep = (snap_ids[q] >= 0) & ~np.isin(snap_ids[q], removed) & ~np.isin(snap_ids[q], fresh_ids)
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

"""The bank's database: one SQLite file in WAL mode, the source of truth.

Tables:

* ``collections``: name, method, the method's fingerprint (JSON and digest), code width and dtype,
  precision, threshold (in the metric's own unit) and where it came from, index factory string,
  created, a random ``uid`` (a collection deleted and created again under the same name is another
  collection) and ``version``, bumped by every add and remove;
* ``items``: id (never reused), collection, SHA-256 of the image bytes (or, for codes read from an
  embeddings folder whose images were not at hand, of the code: ``digest_of`` says which), filename,
  metadata JSON, added, removed, the collection versions at which it was added and removed, its
  code's ``record`` in the codes file (``malle.bank.codefile``), a small JPEG thumbnail. One live item
  per (collection, SHA-256): adding the same bytes again finds it;
* ``calibrations``: per collection ``uid``, the confidence map a lab run gave it (``malle.bank.confidence``);
  a collection without a row answers with its method's shipped map, if any.

Every write is one transaction (``BEGIN IMMEDIATE``) that commits before the caller is answered, with
``synchronous=FULL``: a process killed at any point loses no acknowledged add, and SQLite's journal
makes a half-done transaction vanish. An add fsyncs its codes file before it commits its rows; a bank of
an older schema is brought up to date on open (``malle.bank.upgrade``). Writers are serialised by SQLite's own
lock and, around it, a file lock next to the database (``bank.lock``), which also serialises index writes. Readers never
wait on writers (WAL). Connections are per thread, as ``sqlite3`` requires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import filelock
import numpy as np

from malle.bank import codefile, upgrade
from malle.bank.confidence import default_for
from malle.bank.metadata import metadata_json, read
from malle.errors import CacheError, ConfigError, MalleError

DB_NAME = "bank.sqlite"
LOCK_NAME = "bank.lock"
BUSY_TIMEOUT_MS = 60_000  # a writer waits this long for another before giving up
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # also a safe file name for the index
INT64_MAX = 2**63 - 1  # SQLite's integers: an id, offset or limit beyond is refused, not an overflow

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    method TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    fingerprint_digest TEXT NOT NULL,
    precision TEXT NOT NULL,  -- as asked of create_descriptor (fp32, int8, auto)
    metric TEXT NOT NULL,
    dim INTEGER NOT NULL,
    width INTEGER NOT NULL,
    dtype TEXT NOT NULL,
    threshold REAL NOT NULL,
    threshold_source TEXT NOT NULL,
    index_factory TEXT NOT NULL,
    created TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    digest_of TEXT NOT NULL DEFAULT 'bytes',
    filename TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    added TEXT NOT NULL,
    removed TEXT,
    added_version INTEGER NOT NULL,
    removed_version INTEGER,
    code BLOB NOT NULL,
    thumbnail BLOB  -- a small JPEG for galleries (NULL for codes added without their image)
);
CREATE TABLE IF NOT EXISTS calibrations (uid TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS live_sha ON items(collection, sha256) WHERE removed IS NULL;
CREATE INDEX IF NOT EXISTS by_added ON items(collection, added_version);
CREATE INDEX IF NOT EXISTS by_removed ON items(collection, removed_version);
"""


class BankError(MalleError):
    """The bank cannot do what was asked; the message says why."""


class NotFound(BankError, KeyError):
    """An unknown collection or item."""

    def __str__(self) -> str:  # KeyError quotes its message; this is a sentence
        return str(self.args[0]) if self.args else "not found"


class Conflict(BankError):
    """A collection of that name exists already."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Collection:
    name: str
    uid: str
    method: str
    fingerprint: dict
    fingerprint_digest: str
    precision: str
    metric: str
    dim: int
    width: int
    dtype: str
    threshold: float
    threshold_source: str
    index_factory: str
    created: str
    version: int
    count: int = 0  # live items
    records: int = 0  # records committed in the codes file
    recall_at_10: float | None = None  # of the approximate index against exact search, when built; None: exact
    recall_sample: int | None = None  # codes that recall was measured on
    search_params: str | None = None  # the probes the build chose for its recall target (nprobe=N); None: exact
    calibration: dict | None = None  # its confidence map: a lab run's, else its method's shipped one, else None

    def public(self) -> dict:
        """What the API and ``bank info`` show."""
        return {"name": self.name, "method": self.method, "count": self.count, "threshold": self.threshold,
                "threshold_source": self.threshold_source, "metric": self.metric, "precision": self.precision,
                "dim": self.dim, "index": self.index_factory, "created": self.created, "version": self.version,
                "recall_at_10": self.recall_at_10, "recall_sample": self.recall_sample,
                "search_params": self.search_params,
                "calibration": self.calibration["source"] if self.calibration else None}


@dataclass(frozen=True)
class Item:
    id: int
    collection: str
    sha256: str
    filename: str
    metadata: dict
    added: str
    removed: str | None = None
    digest_of: str = "bytes"
    has_thumbnail: bool = True  # False for codes added without their image (an embeddings folder, a hash list)

    def public(self) -> dict:
        return {"id": self.id, "collection": self.collection, "sha256": self.sha256, "digest_of": self.digest_of,
                "filename": self.filename, "metadata": self.metadata, "added": self.added, "removed": self.removed,
                "has_thumbnail": self.has_thumbnail}


@dataclass(frozen=True)
class NewItem:
    """An item to add: its identity, name, metadata and code (one row of the collection's width)."""

    sha256: str
    filename: str
    code: np.ndarray
    metadata: dict = field(default_factory=dict)
    digest_of: str = "bytes"
    thumbnail: bytes | None = None


ITEM_COLUMNS = "id, collection, sha256, filename, metadata, added, removed, digest_of, thumbnail IS NOT NULL"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"collection name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit")
    return name


class Store:
    """The database of one bank folder; safe to share between threads (one connection each)."""

    def __init__(self, folder: Path, create: bool = True) -> None:
        self.folder = Path(folder).expanduser()
        self.path = self.folder / DB_NAME
        if not self.path.is_file():
            if not create:
                raise BankError(f"{self.folder} is not a bank (no {DB_NAME}); `malle bank create` makes one")
            if self.folder.exists() and not self.folder.is_dir():
                raise CacheError(f"bank {self.folder} is a file, not a folder")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise CacheError(f"bank {self.folder} cannot be created ({err.strerror or err})") from None
        self._local = threading.local()
        self._thread_lock = threading.RLock()  # file locks are per descriptor; this serialises threads too
        self._file_lock = filelock.FileLock(str(self.folder / LOCK_NAME))
        self._codes_files: dict[str, codefile.CodesFile] = {}
        with self.exclusive():  # executescript commits on its own, so the script is its own transaction
            self.db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR IGNORE INTO meta VALUES ('schema', "
                                  "'1'); COMMIT;")
            upgrade.to_current(self)  # schema 1 (new banks too) to 2: codes move into the codes files

    # -- connections and transactions ------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # an acknowledged add is on disk
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.DatabaseError as err:
            raise BankError(f"{self.path} cannot be opened as a bank database ({err})") from None
        return conn

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, serialised across threads and processes; committed on exit."""
        with self._thread_lock, self._file_lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several reads (a deferred transaction; WAL never blocks it)."""
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The bank's write lock without a transaction: for writing index files."""
        with self._thread_lock, self._file_lock:
            yield

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- collections -------------------------------------------------------------------------------------
    def insert_collection(self, row: dict, calibration: dict | None = None) -> None:
        """A new collection and, in the same transaction, the confidence map it was given (if any)."""
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.writing() as db:
            if db.execute("SELECT 1 FROM collections WHERE name = ?", (row["name"],)).fetchone():
                raise Conflict(f"collection {row['name']!r} exists already")
            db.execute(f"INSERT INTO collections ({columns}) VALUES ({marks})",
                       [_column_value(v) for v in row.values()])
            if calibration is not None:
                db.execute("INSERT INTO calibrations VALUES (?, ?)",
                           (row["uid"], json.dumps(calibration, sort_keys=True, allow_nan=False)))

    def collection(self, name: str, db: sqlite3.Connection | None = None, count: bool = True) -> Collection:
        """A collection's row; ``count=False`` skips counting its live items (matches need no count)."""
        db = db or self.db
        row = db.execute("SELECT * FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no collection named {name!r}")
        return self._collection(db, row, count)

    def collections(self) -> list[Collection]:
        with self.reading() as db:
            return [self._collection(db, row) for row in db.execute("SELECT * FROM collections ORDER BY name")]

    def _collection(self, db: sqlite3.Connection, row: tuple, count: bool = True) -> Collection:
        names = [d[0] for d in db.execute("SELECT * FROM collections LIMIT 0").description]
        values = dict(zip(names, row, strict=True))
        values["fingerprint"] = json.loads(values["fingerprint"])
        live = db.execute("SELECT COUNT(*) FROM items WHERE collection = ? AND removed IS NULL",
                          (values["name"],)).fetchone()[0] if count else 0
        stored = db.execute("SELECT record FROM calibrations WHERE uid = ?", (values["uid"],)).fetchone()
        calibration = json.loads(stored[0]) if stored else default_for(values["method"])
        return Collection(**values, count=live, calibration=calibration)

    def delete_collection(self, name: str) -> None:
        with self.writing() as db:
            self.collection(name, db, count=False)
            db.execute("DELETE FROM items WHERE collection = ?", (name,))
            uid = db.execute("SELECT uid FROM collections WHERE name = ?", (name,)).fetchone()[0]
            db.execute("DELETE FROM calibrations WHERE uid = ?", (uid,))
            db.execute("DELETE FROM collections WHERE name = ?", (name,))

    # -- items ------------------------------------------------------------------------------------------------
    def find(self, name: str, sha256: str, db: sqlite3.Connection | None = None) -> Item | None:
        """The live item with these bytes, if any."""
        row = (db or self.db).execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE collection = ? AND sha256 = ? "
                                      "AND removed IS NULL", (name, sha256)).fetchone()
        return _item(row) if row else None

    def insert_items(self, name: str, new: Sequence[NewItem]) -> list[tuple[Item, bool]]:
        """Add every item in one transaction; (item, True) when added, (existing item, False) when its
        SHA-256 was there already. Returns after the commit."""
        out: list[tuple[Item, bool]] = []
        with self.writing() as db:
            coll = self.collection(name, db, count=False)
            version = coll.version + 1
            stamp = now()
            ids: list[int] = []
            codes: list = []
            for item in new:
                code = _check_code(coll, item.code)
                existing = self.find(name, item.sha256, db)
                if existing is not None:
                    out.append((existing, False))
                    continue
                cursor = db.execute(
                    "INSERT INTO items (collection, sha256, digest_of, filename, metadata, added, added_version, code, "
                    "thumbnail, record) VALUES (?, ?, ?, ?, ?, ?, ?, x'', ?, ?)",
                    (name, item.sha256, item.digest_of, item.filename, metadata_json(item.metadata), stamp, version,
                     item.thumbnail, coll.records + len(codes)))
                assert cursor.lastrowid is not None, "an INSERT gives its row id"
                ids.append(cursor.lastrowid)
                codes.append(code)
                out.append((Item(cursor.lastrowid, name, item.sha256, item.filename, item.metadata or {}, stamp,
                                 None, item.digest_of, item.thumbnail is not None), True))
            if codes:  # durable in the codes file before the rows that name them commit
                self.codes_file(coll).append(coll.records, np.asarray(ids, np.int64), np.stack(codes))
                db.execute("UPDATE collections SET version = ?, records = ? WHERE name = ?",
                           (version, coll.records + len(codes), name))
        return out

    def remove_item(self, name: str, item_id: int) -> Item:
        with self.writing() as db:
            coll = self.collection(name, db, count=False)
            item = self.item(name, item_id, db)
            if item.removed is None:
                stamp = now()
                db.execute("UPDATE items SET removed = ?, removed_version = ? WHERE id = ?",
                           (stamp, coll.version + 1, item_id))
                db.execute("UPDATE collections SET version = version + 1 WHERE name = ?", (name,))
                item = dataclasses.replace(item, removed=stamp)
        return item

    def item(self, name: str, item_id: int, db: sqlite3.Connection | None = None) -> Item:
        if not isinstance(item_id, int) or not 0 < item_id <= INT64_MAX:
            raise NotFound(f"collection {name!r} has no item {item_id}")
        row = (db or self.db).execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE collection = ? AND id = ?",
                                      (name, int(item_id))).fetchone()
        if row is None:
            raise NotFound(f"collection {name!r} has no item {item_id}")
        return _item(row)

    def thumbnail(self, name: str, item_id: int) -> bytes | None:
        self.item(name, item_id)
        row = self.db.execute("SELECT thumbnail FROM items WHERE id = ?", (int(item_id),)).fetchone()
        return row[0]

    def items(self, name: str, ids: Sequence[int] | None = None, offset: int = 0, limit: int = 100) -> list[Item]:
        """Live items by id (in the order given), or a page of them in id order."""
        if not 0 <= offset <= INT64_MAX or not 0 <= limit <= INT64_MAX:
            raise ConfigError(f"offset and limit must be integers from 0 to {INT64_MAX}")
        if ids is not None:
            found = {}
            for start in range(0, len(ids), 500):  # SQLite's variable limit
                part = [int(i) for i in ids[start:start + 500]]
                marks = ",".join("?" * len(part))
                # "+collection": ids by rowid, not a scan of the collection's index (1M items: 818 ms -> 0.2 ms)
                for row in self.db.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE +collection = ? AND id IN "
                                           f"({marks})", (name, *part)):
                    found[row[0]] = _item(row)
            return [found[i] for i in ids if i in found]
        rows = self.db.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE collection = ? AND removed IS NULL "
                               "ORDER BY id LIMIT ? OFFSET ?", (name, int(limit), int(offset)))
        return [_item(row) for row in rows]

    def codes(self, coll: Collection, db: sqlite3.Connection, where: str = "removed IS NULL",
              params: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
        """(item ids ascending, codes) of a collection's items matching ``where``; each record is checked."""
        ids, records = self.records(coll, db, where, params)
        return ids, self.codes_file(coll).read(records, ids)

    def records(self, coll: Collection, db: sqlite3.Connection, where: str = "removed IS NULL",
                params: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
        """(item ids ascending, their record numbers in the codes file) of the items matching ``where``."""
        rows = np.asarray(db.execute(f"SELECT id, record FROM items WHERE collection = ? AND {where} ORDER BY id",
                                     (coll.name, *params)).fetchall(), dtype=np.int64).reshape(-1, 2)
        return rows[:, 0].copy(), rows[:, 1].copy()

    def codes_file(self, coll: Collection) -> codefile.CodesFile:
        return self._codes_files.setdefault(coll.uid, codefile.CodesFile(self.folder, coll))

    def changed_since(self, coll: Collection, version: int, db: sqlite3.Connection) -> tuple:
        """(ids, codes) added after ``version`` and still live; ids removed after ``version``."""
        ids, codes = self.codes(coll, db, "removed IS NULL AND added_version > ?", (version,))
        removed = db.execute("SELECT id FROM items WHERE collection = ? AND removed_version > ?",
                             (coll.name, version)).fetchall()
        return ids, codes, np.asarray([r[0] for r in removed], dtype=np.int64)

    def integrity(self, states: dict | None = None) -> list[str]:
        """SQLite's own check, then every collection's rows against its codes file, both ways (with each file's
        state in words into ``states``)."""
        problems = [r[0] for r in self.db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        found = codefile.states(self)
        if states is not None:
            states.update({name: state for name, (_, state) in found.items()})
        return problems + [p for bad, _ in found.values() for p in bad]


def _column_value(value):
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict) else value


def _item(row: tuple) -> Item:
    item_id, collection, sha, filename, metadata, added, removed, digest_of, has_thumbnail = row
    return Item(item_id, collection, sha, filename, read(metadata), added, removed, digest_of, bool(has_thumbnail))


def _check_code(coll: Collection, code: np.ndarray) -> np.ndarray:
    code = np.asarray(code)
    if code.shape != (coll.width,) or code.dtype != np.dtype(coll.dtype):
        raise ConfigError(f"collection {coll.name!r} holds {coll.dtype} codes of width {coll.width}; "
                          f"got {code.dtype} of shape {code.shape}")
    return np.ascontiguousarray(code)


def new_uid() -> str:
    return secrets.token_hex(8)

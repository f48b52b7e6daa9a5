"""Bank schemas, and bringing an older bank up to date when it opens.

* Schema 1 kept each item's code as a BLOB in ``items.code``.
* Schema 2 keeps codes in each collection's codes file (``malle.bank.codefile``): ``items.record`` names an item's
  record (``items.code`` is left empty) and ``collections.records`` counts the committed records; a collection also
  keeps the recall its approximate index reached against exact search when built (``recall_at_10``,
  ``recall_sample``).
* Columns added since, to a schema-2 bank as it opens (``LATER_COLUMNS``): ``collections.search_params``, the probes
  its approximate index's build chose for its recall target (``malle.bank.approx.tune_probes``).

``to_current`` runs under the bank's write lock as every ``Store`` opens. A schema-1 bank (a new bank too: its tables
are first made in schema 1's shape) gets the new columns, its codes appended to the codes files and fsynced, its
BLOBs emptied and its schema set to 2, in one transaction: a crash before the commit leaves schema 1 and its BLOBs,
and the next open writes the codes files again from record 0.
"""

from __future__ import annotations

import numpy as np

from malle.errors import MalleError

CURRENT = 2
NEW_COLUMNS = ("ALTER TABLE items ADD COLUMN record INTEGER",
               "ALTER TABLE collections ADD COLUMN records INTEGER NOT NULL DEFAULT 0",
               "ALTER TABLE collections ADD COLUMN recall_at_10 REAL",
               "ALTER TABLE collections ADD COLUMN recall_sample INTEGER")
LATER_COLUMNS = {"search_params": "ALTER TABLE collections ADD COLUMN search_params TEXT"}
CHUNK = 65_536  # BLOBs moved at a time


class SchemaError(MalleError):
    """A bank this Malle cannot read, or a schema-1 bank too damaged to move over; the message says which."""


def schema_of(db) -> str:
    return db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]


def to_current(store) -> None:
    """Schema 1 to 2 (see the module); any schema other than those is refused in one line."""
    if schema_of(store.db) == "1":
        with store.writing() as db:
            for statement in NEW_COLUMNS:
                db.execute(statement)
            for (name,) in db.execute("SELECT name FROM collections ORDER BY name").fetchall():
                move_codes(store, store.collection(name, db, count=False), db)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(CURRENT),))
    schema = schema_of(store.db)
    if schema != str(CURRENT):
        raise SchemaError(f"{store.path} has bank schema {schema}; this Malle reads schemas 1 and {CURRENT}")
    have = {row[1] for row in store.db.execute("PRAGMA table_info(collections)")}
    if missing := [statement for column, statement in LATER_COLUMNS.items() if column not in have]:
        with store.writing() as db:  # under the bank's write lock (``Store`` holds it): no two processes add one
            for statement in missing:
                db.execute(statement)


def move_codes(store, coll, db) -> None:
    """Every item's BLOB into the codes file, in id order, then the rows point at their records."""
    width = coll.width * np.dtype(coll.dtype).itemsize
    codes = store.codes_file(coll)
    codes.create()
    moved, last = 0, 0
    while rows := db.execute("SELECT id, code FROM items WHERE collection = ? AND id > ? ORDER BY id LIMIT ?",
                             (coll.name, last, CHUNK)).fetchall():
        for item_id, blob in rows:
            if len(blob) != width:
                raise SchemaError(f"{coll.name}: item {item_id} holds {len(blob)} bytes of code, {width} expected; "
                                  "this schema-1 bank cannot be moved to schema 2 until that row is mended")
        ids = np.asarray([r[0] for r in rows], np.int64)
        flat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.dtype(coll.dtype)).reshape(len(rows), coll.width)
        codes.append(moved, ids, flat)
        db.executemany("UPDATE items SET record = ?, code = x'' WHERE id = ?",
                       [(moved + i, int(item_id)) for i, item_id in enumerate(ids)])
        moved, last = moved + len(rows), int(ids[-1])
    db.execute("UPDATE collections SET records = ? WHERE name = ?", (moved, coll.name))

"""A collection's codes in one memory-mapped, append-only file: ``codes/<name>.<uid>.codes`` in the bank folder.

SQLite keeps each item's id and metadata and the number of its record here (``items.record``); one BLOB per item
cost a B-tree cell and a page read per code, so a million references took minutes to load for an index build.

Layout: a ``HEADER_BYTES`` header (``MAGIC``, then JSON: collection uid, method, fingerprint digest, dim, width,
dtype and record size, with the JSON's CRC-32), then fixed-size records, one per item ever added, numbered from 0
in the order the database gave them out. A record is the code's bytes, the item's id (int64, little-endian), the
CRC-32 of both (uint32) and 4 zero bytes; the id lets ``verify`` check rows against records both ways.

Durability: the database counts the records it has committed (``collections.records``). An add writes its records
at that end, cutting off whatever an interrupted add left past it, fsyncs the file, and only then commits its rows.
A crash between the two leaves records past the committed end: no row names them, readers never look at them, the
next add overwrites them and ``verify`` reports them. A record is read only after its CRC and id are checked.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from pathlib import Path

import numpy as np

from malle.errors import MalleError

CODES_DIR = "codes"
MAGIC = b"MALLE-CODES\x00v1\n\x00"  # 16 bytes
HEADER_BYTES = 4096  # one page: records start page-aligned
CHUNK = 65_536  # records read and checked at a time


class CodesFileError(MalleError):
    """A codes file that is missing, foreign or damaged; the message names the file and what is wrong."""


def record_dtype(dtype: str, width: int) -> np.dtype:
    return np.dtype([("code", np.dtype(dtype), (width,)), ("id", "<i8"), ("crc", "<u4"), ("pad", "<u4")])


def header_of(coll) -> dict:
    """What the header records: enough to refuse a file that belongs to another collection or method."""
    return {"uid": coll.uid, "collection": coll.name, "method": coll.method,
            "fingerprint_digest": coll.fingerprint_digest, "dim": coll.dim, "width": coll.width,
            "dtype": coll.dtype, "record_bytes": record_dtype(coll.dtype, coll.width).itemsize}


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CodesFile:
    """The codes file of one collection. Appends come under the bank's write lock; reads from any thread."""

    def __init__(self, bank_folder: Path, coll) -> None:
        self.path = Path(bank_folder) / CODES_DIR / f"{coll.name}.{coll.uid}.codes"
        self.header = header_of(coll)
        self.dtype = record_dtype(coll.dtype, coll.width)
        self._map: np.ndarray | None = None  # replaced whole when the file has grown past it
        self._map_lock = threading.Lock()

    # -- writing ----------------------------------------------------------------------------------------------
    def create(self) -> None:
        """A file with its header and no record, made atomically (temp, fsync, rename, fsync the folder)."""
        if self.path.is_file():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.header, sort_keys=True).encode()
        head = MAGIC + len(text).to_bytes(4, "little") + zlib.crc32(text).to_bytes(4, "little") + text
        if len(head) > HEADER_BYTES:
            raise CodesFileError(f"{self.path.name}: the header does not fit in {HEADER_BYTES} bytes")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(head.ljust(HEADER_BYTES, b"\x00"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)

    def append(self, first: int, ids: np.ndarray, codes: np.ndarray) -> None:
        """Records ``first``, ``first + 1``... for ``ids``/``codes``, durable on return. Anything past ``first`` (an
        interrupted add's records) is cut off first. The caller holds the bank's write lock."""
        self.create()
        records = np.zeros(len(ids), dtype=self.dtype)
        records["code"], records["id"] = codes, ids
        records["crc"] = checksums(records)
        start = HEADER_BYTES + first * self.dtype.itemsize
        fd = os.open(self.path, os.O_RDWR)
        try:
            self._check_header(fd)
            if os.fstat(fd).st_size < start:
                raise CodesFileError(f"{self.path} holds fewer records than the database committed "
                                     f"({first}): the bank is damaged (`malle bank verify`)")
            os.ftruncate(fd, start)
            os.pwrite(fd, records.tobytes(), start)
            os.fsync(fd)  # before the database commits the rows that name these records
        finally:
            os.close(fd)

    # -- reading ----------------------------------------------------------------------------------------------
    def on_disk(self) -> int:
        """Whole records in the file (committed or not); a torn last record is not counted."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        return max(0, size - HEADER_BYTES) // self.dtype.itemsize

    def torn_bytes(self) -> int:
        """Bytes of a last record that was never finished."""
        try:
            return max(0, self.path.stat().st_size - HEADER_BYTES) % self.dtype.itemsize
        except FileNotFoundError:
            return 0

    def records(self, numbers: np.ndarray) -> np.ndarray:
        """The raw records ``numbers`` (structured rows), unchecked."""
        numbers = np.asarray(numbers, dtype=np.int64)
        if len(numbers) == 0:
            return np.zeros(0, dtype=self.dtype)
        mapped = self._mapped(int(numbers.max()) + 1)
        return mapped[numbers]

    def read(self, numbers: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The codes of records ``numbers``, each checked against its CRC and the item id the database gives it."""
        out = np.empty((len(numbers),) + self.dtype["code"].shape, dtype=self.dtype["code"].base)
        for start in range(0, len(numbers), CHUNK):
            part = slice(start, start + CHUNK)
            out[part] = self.checked(np.asarray(numbers)[part], np.asarray(ids)[part])
        return out

    def checked(self, numbers: np.ndarray, ids: np.ndarray) -> np.ndarray:
        found = self.records(numbers)
        bad = np.flatnonzero((checksums(found) != found["crc"]) | (found["id"] != ids))
        if len(bad):
            i = int(bad[0])
            raise CodesFileError(f"{self.path.name}: record {int(numbers[i])} of item {int(ids[i])} is damaged "
                                 f"({len(bad)} record(s) fail their checksum or id); `malle bank verify`")
        return found["code"]

    def _mapped(self, wanted: int) -> np.ndarray:
        mapped = self._map
        if mapped is not None and len(mapped) >= wanted:
            return mapped
        with self._map_lock:
            if self._map is None or len(self._map) < wanted:
                have = self.on_disk()
                if have < wanted:
                    raise CodesFileError(f"{self.path} holds {have} records; the database names record "
                                         f"{wanted - 1}: the bank is damaged (`malle bank verify`)")
                self.check_header()
                self._map = np.memmap(self.path, dtype=self.dtype, mode="r", offset=HEADER_BYTES, shape=(have,))
            return self._map

    def check_header(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise CodesFileError(f"{self.path} is missing: the bank is damaged (`malle bank verify`)") from None
        try:
            self._check_header(fd)
        finally:
            os.close(fd)

    def _check_header(self, fd: int) -> None:
        head = os.pread(fd, HEADER_BYTES, 0)
        size = int.from_bytes(head[16:20], "little") if len(head) >= 24 else 0
        text = head[24:24 + size]
        if not head.startswith(MAGIC) or len(text) != size or zlib.crc32(text) != int.from_bytes(head[20:24], "little"):
            raise CodesFileError(f"{self.path} is not a Malle codes file, or its header is damaged")
        found = json.loads(text)
        if found != self.header:
            differs = sorted(k for k in self.header if found.get(k) != self.header[k])
            raise CodesFileError(f"{self.path} belongs to another collection or method ({', '.join(differs)} "
                                 "differ from the database)")


def checksums(records: np.ndarray) -> np.ndarray:
    """CRC-32 of each record's code and id bytes."""
    if len(records) == 0:
        return np.zeros(0, dtype=np.uint32)
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(len(records), records.dtype.itemsize)
    covered = records.dtype.itemsize - 8  # all but the CRC and its padding
    return np.fromiter((zlib.crc32(row[:covered]) for row in raw), dtype=np.uint32, count=len(records))


def verify(codes: CodesFile, ids: np.ndarray, numbers: np.ndarray, committed: int) -> tuple[list[str], str]:
    """Rows against records both ways: each of the ``committed`` records is named by exactly one row, with its id,
    and passes its CRC; every row names a committed record. Returns (problems, the file's state in words)."""
    name = codes.path.name
    if committed == 0 and not codes.path.exists():
        return [], "no codes yet"
    try:
        codes.check_header()
    except CodesFileError as err:
        return [str(err)], "damaged"
    have = codes.on_disk()
    if have < committed:
        return [f"{name} holds {have} records, the database committed {committed}"], "damaged"
    problems = []
    outside = np.flatnonzero((numbers < 0) | (numbers >= committed))
    if len(outside):
        problems.append(f"{name}: {len(outside)} item(s) name no committed record (item {int(ids[outside[0]])})")
    inside = np.setdiff1d(np.arange(len(numbers)), outside)
    named = np.bincount(numbers[inside], minlength=committed)
    if (named > 1).any():
        problems.append(f"{name}: {int((named > 1).sum())} record(s) named by more than one item "
                        f"(record {int(np.flatnonzero(named > 1)[0])})")
    if (named == 0).any():
        problems.append(f"{name}: {int((named == 0).sum())} committed record(s) named by no item "
                        f"(record {int(np.flatnonzero(named == 0)[0])})")
    expected = np.full(committed, -1, dtype=np.int64)
    expected[numbers[inside]] = ids[inside]
    bad = 0
    for start in range(0, committed, CHUNK):
        found = codes.records(np.arange(start, min(committed, start + CHUNK)))
        once = named[start:start + len(found)] == 1  # a record named twice or never is reported above
        bad += int(((checksums(found) != found["crc"]) | (once & (found["id"] != expected[start:start + len(found)])))
                   .sum())
    if bad:
        problems.append(f"{name}: {bad} record(s) fail their checksum or do not name their item")
    tail, torn = have - committed, codes.torn_bytes()
    state = "ok" if not problems else "damaged"
    if tail or torn:
        state += (f"; {tail} record(s) and {torn} byte(s) past the committed end, left by an add interrupted before "
                  "its commit (never read; the next add overwrites them)")
    return problems, state


def states(store) -> dict[str, tuple[list[str], str]]:
    """Per collection of ``store``: (problems, its codes file's state in words), from ``verify``."""
    out = {}
    for coll in store.collections():
        with store.reading() as db:
            now = store.collection(coll.name, db, count=False)
            ids, numbers = store.records(now, db, "1")
        found, state = verify(store.codes_file(now), ids, numbers, now.records)
        out[coll.name] = ([f"{coll.name}: {p}" for p in found], state)
    return out

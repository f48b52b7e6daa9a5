"""On-disk cache: fingerprints, atomic writes, verified stage folders, housekeeping.

A stage is built in a fresh temporary folder and renamed into place only when
complete, with ``done.json`` written last. ``done.json`` records the stage's
metadata and every artifact's size and SHA-256, and every load checks them, so
a folder whose files were deleted, truncated or altered is rebuilt, never trusted.

Several processes (CLI runs, dashboard sessions) may share one cache: a stage is
built under a per-folder file lock (``filelock``), so one process builds and the
others wait and reuse its result. A complete, valid folder is never deleted.

Nothing here pickles: arrays are ``.npy``, tables Parquet or CSV, metadata JSON.
Files and folders get the permissions the umask allows, like any other output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import pandas as pd

from malle.errors import CacheError

DONE_MARK = "done.json"
DONE_FORMAT = 2  # done.json holds {"format", "meta", "artifacts"}
LOCK_SUFFIX = ".lock"
TEMP_MARK = ".tmp-"  # a stage under construction: .<key>.tmp-XXXX
TRASH_MARK = ".trash-"  # a damaged stage moved aside before its rebuild takes its place
# A waiting process says so once after this long, then keeps waiting for the builder.
LOCK_NOTICE_AFTER_S = 2.0


def default_root() -> Path:
    env = os.environ.get("MALLE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "malle"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# -- permissions --------------------------------------------------------------------------------
def _current_umask() -> int:
    # /proc tells without changing anything; os.umask would briefly change it for every thread.
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("Umask:"))
        return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def set_file_mode(path: Path) -> None:
    """What ``open()`` would have given: mkstemp creates 0600 files regardless of the umask."""
    os.chmod(path, 0o666 & ~_UMASK)


def set_dir_mode(path: Path) -> None:
    os.chmod(path, 0o777 & ~_UMASK)


# -- atomic files -------------------------------------------------------------------------------
def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """``write(temp path)`` next to ``path``, then one rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        set_file_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str)))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_npy(path: Path, arr: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)

    write_atomic(path, write)


def read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def write_table(path: Path, df: pd.DataFrame) -> None:
    """Write Parquet or CSV by the file's suffix."""
    if path.suffix == ".parquet":
        write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))
    elif path.suffix == ".csv":
        write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))
    else:
        raise ValueError(f"unsupported table format: {path.suffix}")


def write_arrow(path: Path, table) -> None:
    """A pyarrow Table as Parquet, atomically (for columns pandas cannot type, such as fixed-size vectors)."""
    import pyarrow.parquet as pq

    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove a file can be written there; else one-line CacheError naming ``what``."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise CacheError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise CacheError(f"{what} {path} cannot be written ({err.strerror or err})") from None
    return path


# -- stage folders ------------------------------------------------------------------------------
def artifacts_of(folder: Path) -> dict[str, list]:
    """{relative path: [size, sha256]} for every file in ``folder`` except the done mark."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != DONE_MARK:
            found[path.relative_to(folder).as_posix()] = [path.stat().st_size, file_digest(path)]
    return found


def problem_with(folder: Path) -> str | None:
    """Why ``folder`` cannot be trusted, or None when every artifact is as recorded."""
    done = folder / DONE_MARK
    if not done.is_file():
        return "incomplete (no done.json)" if folder.exists() else "absent"
    try:
        record = read_json(done)
    except (OSError, ValueError) as err:
        return f"done.json unreadable ({type(err).__name__})"
    if not isinstance(record, dict) or record.get("format") != DONE_FORMAT or not isinstance(
            record.get("artifacts"), dict) or not isinstance(record.get("meta"), dict):
        return "done.json is not a stage record"
    for name, recorded in record["artifacts"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size, digest = recorded
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} recorded"
        if file_digest(path) != digest:
            return f"{name} differs from its recorded SHA-256"
    return None


def read_meta(folder: Path) -> dict:
    return read_json(folder / DONE_MARK)["meta"]


@contextlib.contextmanager
def building(folder: Path, meta: dict | None = None) -> Iterator[Path]:
    """Yield a temp folder; on success it atomically becomes ``folder``.

    ``done.json`` (``meta`` plus the artifact digests) is written last, inside the
    temp folder, so a folder without it is never trusted. On error the temp folder
    is removed. Call with the folder's lock held (``obtain`` does).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}{TEMP_MARK}", dir=folder.parent))
    set_dir_mode(tmp)
    try:
        yield tmp
        write_json(tmp / DONE_MARK, {"format": DONE_FORMAT, "meta": meta or {}, "artifacts": artifacts_of(tmp)})
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_folder(new: Path, folder: Path) -> None:
    """Move ``new`` to ``folder``; a damaged folder already there is moved aside first, then removed."""
    if folder.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}{TRASH_MARK}", dir=folder.parent))
        os.replace(folder, trash / folder.name)
        os.replace(new, folder)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, folder)


def lock_for(folder: Path) -> filelock.FileLock:
    folder.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(folder) + LOCK_SUFFIX)


@contextlib.contextmanager
def locked(folder: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Hold ``folder``'s build lock; say once when waiting for another process."""
    lock = lock_for(folder)
    try:
        lock.acquire(timeout=LOCK_NOTICE_AFTER_S)
    except filelock.Timeout:
        log(f"Waiting for another process that is building {folder.parent.name}/{folder.name}…")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@dataclass
class Found:
    meta: dict
    cached: bool  # True: reused from the cache; False: built by this call


def obtain(folder: Path, build: Callable[[Path, dict], None], log: Callable[[str], None] = lambda m: None) -> Found:
    """The verified stage in ``folder``, built by ``build(tmp, meta)`` unless a valid one exists.

    A damaged folder is rebuilt with one notice naming it. Safe when several
    processes ask for the same folder at once: one builds, the others reuse.
    """
    if problem_with(folder) is None:
        _touch(folder)
        return Found(read_meta(folder), True)
    with locked(folder, log):
        problem = problem_with(folder)  # another process may have built it while we waited
        if problem is None:
            return Found(read_meta(folder), True)
        if problem != "absent":
            log(f"Cache: {folder.parent.name}/{folder.name} is damaged ({problem}); rebuilding it.")
        _sweep_temp_of(folder)
        meta: dict = {}
        start = time.perf_counter()
        with building(folder, meta) as tmp:
            build(tmp, meta)
            meta["seconds"] = time.perf_counter() - start
    return Found(read_meta(folder), False)


def _touch(folder: Path) -> None:
    """Mark a use, for least-recently-used pruning (a read-only cache just is not marked)."""
    with contextlib.suppress(OSError):
        os.utime(folder)


def _sweep_temp_of(folder: Path) -> None:
    """Remove temp and trash folders that a killed build of ``folder`` left; its lock must be held."""
    for leftover in folder.parent.glob(f".{folder.name}.*-*"):
        if leftover.is_dir() and (TEMP_MARK in leftover.name or TRASH_MARK in leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)


# -- housekeeping: python -m malle cache info|verify|prune|clear ----------------------------------
@dataclass
class Entry:
    kind: str  # samples, copies, embed, search, uploads
    folder: Path
    bytes: int
    last_used: float  # the folder's mtime

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.folder.name}"


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for file in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, file)).st_size
    return total


def _is_leftover(path: Path) -> bool:
    return path.name.startswith(".") and (TEMP_MARK in path.name or TRASH_MARK in path.name)


def entries(root: Path) -> list[Entry]:
    """Every stage folder under ``root``, complete or not (temp folders excluded)."""
    found = []
    for kind in sorted(p for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []:
        for folder in sorted(kind.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                found.append(Entry(kind.name, folder, _size(folder), folder.stat().st_mtime))
    return found


def leftovers(root: Path) -> list[Path]:
    """Temp and trash folders of builds that were killed or are running now."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for kind in root.iterdir() if kind.is_dir() for p in kind.iterdir()
                  if p.is_dir() and _is_leftover(p))


def info(root: Path) -> pd.DataFrame:
    """Size and entry count per stage kind, plus leftover temp folders."""
    rows: dict[str, dict] = {}
    for entry in entries(root):
        row = rows.setdefault(entry.kind, {"stage": entry.kind, "entries": 0, "bytes": 0})
        row["entries"] += 1
        row["bytes"] += entry.bytes
    table = pd.DataFrame(list(rows.values()), columns=["stage", "entries", "bytes"])
    orphans = leftovers(root)
    if orphans:
        table.loc[len(table)] = ["(temp folders)", len(orphans), sum(_size(p) for p in orphans)]
    return table


def total_bytes(root: Path) -> int:
    return _size(Path(root)) if Path(root).is_dir() else 0


def verify(root: Path) -> list[tuple[Entry, str]]:
    """(entry, problem) for every stage folder that would be rebuilt on its next use."""
    return [(e, p) for e in entries(root) if (p := problem_with(e.folder)) is not None]


def remove_entry(folder: Path) -> bool:
    """Delete a stage folder unless a process is building it right now; True when removed."""
    lock = lock_for(folder)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    try:
        shutil.rmtree(folder, ignore_errors=True)
        _sweep_temp_of(folder)
    finally:
        lock.release()
    return True


def sweep_leftovers(root: Path) -> list[Path]:
    """Remove temp folders whose build is no longer running (its lock is free)."""
    removed = []
    for leftover in leftovers(root):
        key = leftover.name[1:].split(TEMP_MARK)[0].split(TRASH_MARK)[0]
        lock = lock_for(leftover.parent / key)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            continue  # a live build
        try:
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
        finally:
            lock.release()
    return removed


def prune(root: Path, max_bytes: int | None = None) -> list[str]:
    """Remove leftovers and damaged entries; then, with ``max_bytes``, least recently used entries
    until the cache fits. Returns what was removed."""
    removed = [f"{p.parent.name}/{p.name}" for p in sweep_leftovers(root)]
    for entry, _ in verify(root):
        if remove_entry(entry.folder):
            removed.append(entry.name)
    if max_bytes is not None:
        alive = sorted((e for e in entries(root)), key=lambda e: e.last_used)
        total = sum(e.bytes for e in alive)
        for entry in alive:
            if total <= max_bytes:
                break
            if remove_entry(entry.folder):
                removed.append(entry.name)
                total -= entry.bytes
    return removed


def clear(root: Path) -> list[str]:
    """Remove every entry that no process is building now."""
    removed = [f"{p.parent.name}/{p.name}" for p in sweep_leftovers(root)]
    removed += [e.name for e in entries(root) if remove_entry(e.folder)]
    return removed

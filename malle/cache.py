"""On-disk cache: fingerprints and atomic writes.

Each stage writes its artifacts into a fresh temporary folder and renames it
into place only when complete, so an interrupted run never leaves a folder
that a later run would trust. Nothing here pickles: arrays are ``.npy``,
tables Parquet or CSV, metadata JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DONE_MARK = "done.json"


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


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_complete(folder: Path) -> bool:
    return (folder / DONE_MARK).is_file()


@contextlib.contextmanager
def building(folder: Path, meta: dict | None = None) -> Iterator[Path]:
    """Yield a temp folder; on success it atomically becomes ``folder``.

    ``done.json`` (with ``meta``) is written last, inside the temp folder, so a
    folder without it is never trusted. On error the temp folder is removed.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
        write_json(tmp / DONE_MARK, meta or {})
        if folder.exists():  # stale, incomplete leftover from a crashed run
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json(path: Path, obj: Any) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str)))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_npy(path: Path, arr: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)

    _atomic(path, write)


def read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def write_table(path: Path, df: pd.DataFrame) -> None:
    """Write Parquet or CSV by the file's suffix."""
    if path.suffix == ".parquet":
        _atomic(path, lambda tmp: df.to_parquet(tmp, index=False))
    elif path.suffix == ".csv":
        _atomic(path, lambda tmp: df.to_csv(tmp, index=False))
    else:
        raise ValueError(f"unsupported table format: {path.suffix}")


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)

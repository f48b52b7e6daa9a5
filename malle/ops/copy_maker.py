"""Stage 2's work: each original's modified copies, made by op chains and written as JPEGs with a manifest.

Each copy records its exact chain as JSON, so any copy can be replayed
pixel-identically. One generator per original (``copy_rng``) decides its copies.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from malle import parallel
from malle.errors import BadImage, ConfigError
from malle.io.cache import write_bytes
from malle.io.images import encode_jpeg, load_rgb
from malle.io.naming import unique_name
from malle.ops.chains import Step, apply_chain, chain_to_json, check_lengths, sample_chain
from malle.ops.composites import NO_CONTEXT, ContextOp, OpContext
from malle.ops.reference import REFERENCE_OPS
from malle.ops.registry import OPS

COPY_JPEG_QUALITY = 95  # storage quality of copies; the jpeg op compresses harder on purpose
MANIFEST_COLUMNS = ["file", "source", "class", "copy_index", "chain_length", "ops", "chain", "chain_lengths"]
COPY_SUFFIX = ".JPEG"


@dataclass(frozen=True)
class AugmentConfig:
    copies: tuple[int, ...] = (4, 8)  # each original's copy count is drawn from these
    chain_lengths: tuple[int, int] = (1, 5)
    ops: tuple[str, ...] = REFERENCE_OPS
    single_share: float = 0.0  # share of chains that are one edit alone (0: lengths alone decide)
    preset: str = ""  # the preset these came from (malle.ops.presets), "" when none was named

    def __post_init__(self):
        # Tuples even when built from JSON lists, so configs compare and hash equal.
        for name in ("copies", "chain_lengths", "ops"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        # Fail at configuration time, not halfway through a long run.
        if not self.copies or any(int(n) < 1 for n in self.copies):
            raise ConfigError(f"copies must be positive counts, got {self.copies}")
        check_lengths(self.chain_lengths, self.ops)
        if not 0.0 <= self.single_share < 1.0:
            raise ConfigError(f"the share of single edits must be in [0, 1), got {self.single_share}")

    def describe(self) -> str:
        low, high = self.chain_lengths
        lengths = f"uniform {low}..{min(high, len(self.ops))}"
        return f"1 with p={self.single_share:g}, else {lengths}" if self.single_share else lengths

    @property
    def has_composites(self) -> bool:
        """Whether chains may paste donor pictures (then the run draws donors from the dataset)."""
        return any(isinstance(OPS[name], ContextOp) for name in self.ops)

    def as_dict(self) -> dict:
        # The newer fields only when set, so configs (and cache keys) written before them stay the same.
        extra: dict[str, float | str] = {"single_share": self.single_share} if self.single_share else {}
        extra |= {"preset": self.preset} if self.preset else {}
        return {"copies": list(self.copies), "chain_lengths": list(self.chain_lengths), "ops": list(self.ops),
                **extra}


TOKEN = re.compile(r"[^_]+")
COPY_NAME = re.compile(r"(?P<stem>[^_]+_[^_]+(?:_[a-z]+)+?)(?:-(?P<n>\d+))?\.jpe?g", re.IGNORECASE)


def copy_filename(class_token: str, instance_token: str, chain: Sequence[Step], taken: set[str]) -> str:
    """``{class}_{instance}_{op1}_..._{opN}.JPEG``, with ``-2``, ``-3``... on a clash."""
    if not chain:
        raise ValueError("a copy needs at least one op (its name would equal the original's)")
    for token in (class_token, instance_token):
        if not TOKEN.fullmatch(token):
            raise ValueError(f"filename token must be non-empty without '_': {token!r}")
    stem = "_".join([class_token, instance_token, *(step.op for step in chain)])
    return unique_name(stem, COPY_SUFFIX, taken)


def parse_copy_filename(name: str) -> tuple[str, str, list[str]]:
    """Inverse of ``copy_filename``: (class_token, instance_token, op names)."""
    match = COPY_NAME.fullmatch(name)
    if not match:
        raise ValueError(f"not a copy filename ({{class}}_{{instance}}_{{op}}[_{{op}}...][-N].JPEG): {name!r}")
    class_token, instance_token, *ops = match["stem"].split("_")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"copy filename {name!r} names unknown op(s) {unknown}; valid ops: {', '.join(OPS)}")
    return class_token, instance_token, ops


def make_copies(
    originals: pd.DataFrame,
    originals_dir: Path,
    out_dir: Path,
    config: AugmentConfig,
    seed: int,
    progress: Callable[..., Any] | None = None,
    context: OpContext = NO_CONTEXT,
) -> pd.DataFrame:
    """Write each original's copies into ``out_dir``; return the manifest (one row per copy).

    ``context``: the donor pictures composite ops paste (none: generated patterns)."""
    _check_unique_identities(originals)
    records = originals.to_dict("records")
    bar = progress(total=len(records), desc="copies") if progress else None
    copies_of = functools.partial(_copies_of, originals_dir=Path(originals_dir), out_dir=Path(out_dir),
                                  config=config, seed=seed, context=context)
    rows = []
    try:
        # Worker processes (malle.parallel), collected in the originals' order: each original's copies come
        # from its own generator, so the files and the manifest are the same bytes as in one process.
        for made in parallel.ordered_map(copies_of, records):
            rows.extend(made)
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _check_unique_identities(originals: pd.DataFrame) -> None:
    # Copy names come from (class_token, instance); two originals sharing both would
    # overwrite each other's copies and make instance-level matching ambiguous.
    dupes = originals[originals.duplicated(["class_token", "instance"], keep=False)]
    if len(dupes):
        raise ValueError(f"originals share class_token+instance: {sorted(dupes['file'])[:5]}")


def copy_rng(seed: int, original: str) -> np.random.Generator:
    """One generator per original, seeded by the run seed and the original's file name.

    Its copies then depend on nothing else: not on how many copies other originals
    got, nor on which other images the dataset holds.
    """
    words = np.frombuffer(hashlib.sha256(original.encode()).digest(), dtype=np.uint32)
    return np.random.default_rng([seed, *words.tolist()])


def _copies_of(row: dict, originals_dir: Path, out_dir: Path, config: AugmentConfig, seed: int,
               context: OpContext) -> list:
    rng = copy_rng(seed, row["file"])
    n_copies = int(rng.choice(config.copies))
    try:
        img = load_rgb(originals_dir / row["file"])
    except BadImage as err:
        raise BadImage(f"{row['file']}: {err}") from err
    return write_copies(img, rng, n_copies, (row["class_token"], row["instance"]), row["file"], row["class"], config,
                        out_dir, context)


def write_copies(img: Image.Image, rng: np.random.Generator, n: int, tokens: tuple[str, str], source: str, label: str,
                 config: AugmentConfig, out_dir: Path, context: OpContext = NO_CONTEXT) -> list[dict]:
    """``n`` modified copies of ``img`` with chains drawn from ``config``, written as JPEGs; their manifest rows.

    ``source`` is the original's file (empty for a distractor, whose original is not in the database);
    ``context`` holds the donor pictures of composite ops.
    """
    taken: set[str] = set()
    rows = []
    for copy_index in range(n):
        chain = sample_chain(rng, img.size, config.ops, config.chain_lengths, context, config.single_share)
        name = copy_filename(*tokens, chain, taken)
        write_bytes(out_dir / name, encode_jpeg(apply_chain(img, chain, context), COPY_JPEG_QUALITY))
        rows.append({"file": name, "source": source, "class": label, "copy_index": copy_index,
                     "chain_length": len(chain), "ops": "|".join(step.op for step in chain),
                     "chain": chain_to_json(chain), "chain_lengths": config.describe()})
    return rows

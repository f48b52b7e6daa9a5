"""Distractors: images of the dataset that were not sampled as originals, on either side of the search.

Distractor queries look like copies but have no original in the database, so a
method that "finds" one has made a false match. Each unsampled image gets copies
drawn from the same chain distribution as the originals' (its generator seeded by
the run seed and its path), until the requested number is reached.

Database distractors (DISC21's reference distractors) go the other way: unsampled
images put into the database that no query copies. They are drawn first, so the
two never share an image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import BadImage
from .imageio import load_rgb
from .ops import MANIFEST_COLUMNS, NO_CONTEXT, AugmentConfig, OpContext, copy_rng, write_copies
from .sampling import Candidate, original_name

DISTRACTOR_COLUMNS = [*MANIFEST_COLUMNS, "origin"]  # origin: the unsampled image, relative to the dataset


def unsampled(candidates: list[Candidate], originals: pd.DataFrame) -> list[Candidate]:
    taken = set(originals["source_path"])
    return [c for c in candidates if c.rel not in taken]


DB_DISTRACTOR_STREAM = 7  # the seed stream that picks database distractors, apart from every other draw


def database_distractors(pool: list[Candidate], wanted: int, seed: int) -> list[Candidate]:
    """Up to ``wanted`` images of ``pool`` drawn with the run seed, in the pool's (sorted) order."""
    order = np.random.default_rng([seed, DB_DISTRACTOR_STREAM]).permutation(len(pool))
    return [pool[i] for i in sorted(order[:wanted])]


# An extra reference's file name says where it came from: the dataset (database distractors), the --db-extra
# folder of images, or an embeddings folder (then only its codes are here, no image).
DB_PREFIX, EXTRA_PREFIX, EMBEDDED_PREFIX = "db:", "extra:", "embedded:"


def reference_rows(db_distractors: list[Candidate], extra: list[Candidate]) -> pd.DataFrame:
    """``file, class, path`` of the extra references: database distractors, then a folder's images, whose
    classes are unknown, so they never count as a same-class hit."""
    rows = [{"file": f"{DB_PREFIX}{c.rel}", "class": c.label, "path": str(c.path)} for c in db_distractors]
    rows += [{"file": f"{EXTRA_PREFIX}{c.rel}", "class": "", "path": str(c.path)} for c in extra]
    return pd.DataFrame(rows, columns=["file", "class", "path"])


def reference_path(file: str, data_root: Path, extra_root: Path | None) -> Path | None:
    """The image of an extra reference named by ``reference_rows``; None when only its embedding is known."""
    for prefix, root in ((DB_PREFIX, data_root), (EXTRA_PREFIX, extra_root)):
        if file.startswith(prefix) and root is not None:
            return root / file.removeprefix(prefix)
    return None


def make_distractors(pool: list[Candidate], k: int, out_dir: Path, config: AugmentConfig, seed: int,
                     progress: Callable | None = None,
                     context: OpContext = NO_CONTEXT) -> tuple[pd.DataFrame, list[dict]]:
    """Up to ``k`` distractor queries written into ``out_dir``: (their manifest, unusable images with reasons).

    ``context``: the donor pictures composite ops paste, the same as the copies'."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0xD157])
    order = [pool[i] for i in rng.permutation(len(pool))]
    rows, skipped, names = [], [], set()
    bar = progress(total=k, desc="distractor queries") if progress else None
    for candidate in order:
        if len(rows) >= k:
            break
        try:
            img = load_rgb(candidate.path)
        except BadImage as err:
            skipped.append({"path": candidate.rel, "reason": str(err)})
            continue
        image_rng = copy_rng(seed, f"distractor:{candidate.rel}")
        n = min(int(image_rng.choice(config.copies)), k - len(rows))
        _, class_token, instance = original_name(candidate, names)
        made = write_copies(img, image_rng, n, (class_token, instance), "", candidate.label, config, out_dir,
                            context)
        rows += [{**row, "origin": candidate.rel} for row in made]
        if bar:
            bar.update(len(made))
    if bar:
        bar.close()
    return pd.DataFrame(rows, columns=DISTRACTOR_COLUMNS), skipped

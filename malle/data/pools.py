"""The spare images: a dataset's images not sampled as originals, split into pools in one declared order.

``POOL_ORDER`` is that order. Each pool draws, with its own seed stream (``SeedStream``), from what the pools
before it leave, so a pool that a run does not use draws nothing and a later pool never moves an earlier one:

1. ``database_distractors``: put into the database, and no query copies them (DISC21's reference distractors);
2. ``donors``: the other pictures that composite ops paste (only when the chains hold a composite op);
3. ``distractor_sources``: the images distractor queries are made from, one query per image
   (``malle.data.distractor_queries``); the hard negatives that need pictures take theirs from it too
   (``malle.data.hard_negatives``, with their own stream, so they never move which images the copies take);
4. ``background``: what ``METHOD+norm`` normalises against, from what the distractor queries did not use.

Extra references (database distractors, a ``--db-extra`` folder, an embeddings folder) are named by a prefix
that says where they came from (``reference_rows``, ``reference_path``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from malle.data.sampling import Candidate


class SeedStream(IntEnum):
    """The seed streams that keep each random draw of a run apart from every other (``[seed, stream]``)."""

    DATABASE_DISTRACTORS = 7
    DONORS = 11
    BACKGROUND = 13
    DISTRACTOR_ORDER = 0xD157  # the order spare images are tried in for distractor queries
    HARD_NEGATIVES = 17  # with a negative's index: what it paints and which spare photos it takes


POOL_ORDER = ("database_distractors", "donors", "distractor_sources", "background")
MAX_DONORS = 200
# Enough for a stable mean of the top-3 background similarities, and cheap to encode. On a 1,000-image dataset
# the spare images (a few hundred) are all taken: after the draws before it, nothing else uses them.
MAX_BACKGROUND = 1000


def unsampled(candidates: Sequence[Candidate], originals: pd.DataFrame) -> list[Candidate]:
    taken = set(originals["source_path"])
    return [c for c in candidates if c.rel not in taken]


def draw(pool: Sequence[Candidate], wanted: int, seed: int, stream: SeedStream) -> list[Candidate]:
    """Up to ``wanted`` images of ``pool`` drawn with the run seed and ``stream``, in the pool's (sorted) order."""
    order = np.random.default_rng([seed, int(stream)]).permutation(len(pool))
    return [pool[i] for i in sorted(order[:wanted])]


def leaving_out(pool: Sequence[Candidate], *taken: Collection[Candidate]) -> list[Candidate]:
    used = {c.rel for group in taken for c in group}
    return [c for c in pool if c.rel not in used]


@dataclass(frozen=True)
class SparePools:
    """One run's split of its spare images (``spare``: the unsampled images in the dataset's sorted order)."""

    spare: tuple[Candidate, ...]
    seed: int
    database_size: int  # how many database distractors were asked for (``--db-distractors``)
    with_donors: bool  # whether the chains hold a composite op

    @cached_property
    def database_distractors(self) -> list[Candidate]:
        return draw(self.spare, self.database_size, self.seed, SeedStream.DATABASE_DISTRACTORS)

    @cached_property
    def donors(self) -> list[Candidate]:
        """At most half of what the database distractors leave, so distractor queries keep the rest."""
        if not self.with_donors:
            return []
        pool = leaving_out(self.spare, self.database_distractors)
        return draw(pool, min(MAX_DONORS, len(pool) // 2), self.seed, SeedStream.DONORS)

    @cached_property
    def distractor_sources(self) -> list[Candidate]:
        return leaving_out(self.spare, self.database_distractors, self.donors)

    def background(self, distractor_origins: Collection[str]) -> list[Candidate]:
        """Up to ``MAX_BACKGROUND`` images that no earlier pool holds and no distractor query was made from."""
        pool = [c for c in leaving_out(self.spare, self.database_distractors, self.donors)
                if c.rel not in distractor_origins]
        return draw(pool, MAX_BACKGROUND, self.seed, SeedStream.BACKGROUND)


# The keys say what decides a pool from the configuration alone, so a stage's cache key is known before the
# originals are drawn (their stage's key covers those).
def donor_key(database_size: int) -> dict:
    """What decides ``SparePools.donors``, for cache keys."""
    return {"donor_stream": int(SeedStream.DONORS), "max_donors": MAX_DONORS, "db_distractors": database_size}


def background_key(seed: int, database_size: int) -> tuple:
    """What decides ``SparePools.background`` beyond the distractor queries' own key, for cache keys."""
    return seed, int(SeedStream.BACKGROUND), MAX_BACKGROUND, database_size, donor_key(database_size)


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

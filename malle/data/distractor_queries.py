"""Distractor queries: copies of spare images that are not in the database (``make_distractors``).

Distractor queries look like copies but have no original in the database, so a method that "finds" one has made
a false match. As in DISC21, each comes from a distinct photo: every spare image gives one copy, its chain drawn
from the same distribution as the originals' (its generator seeded by the run seed and its path), until the
requested number is reached or the images run out. Which images may serve is ``malle.data.pools``' decision;
the order they are tried in is its ``SeedStream.DISTRACTOR_ORDER``. Hard negatives, derived from no image of
the database, are ``malle.data.hard_negatives``; the manifest's ``kind`` tells the two apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from malle import parallel
from malle.data.pools import SeedStream
from malle.data.sampling import Candidate, original_name
from malle.errors import BadImage
from malle.io.images import load_rgb
from malle.ops import MANIFEST_COLUMNS, NO_CONTEXT, AugmentConfig, OpContext, copy_rng, write_copies

# origin: the spare image(s) it was made from, relative to the dataset (several joined by "|", none for a
# generated hard negative); kind: COPY_KIND, or the hard negative's kind.
DISTRACTOR_COLUMNS = [*MANIFEST_COLUMNS, "origin", "kind"]
COPY_KIND = "copy"
ORIGIN_SEPARATOR = "|"


def origins(manifest: pd.DataFrame) -> set[str]:
    """Every spare image some distractor query was made from."""
    return {rel for origin in manifest["origin"] for rel in origin.split(ORIGIN_SEPARATOR) if rel}


def make_distractors(pool: list[Candidate], k: int, out_dir: Path, config: AugmentConfig, seed: int,
                     progress: Callable | None = None,
                     context: OpContext = NO_CONTEXT) -> tuple[pd.DataFrame, list[dict]]:
    """Up to ``k`` distractor queries written into ``out_dir``, one per image of ``pool``: (their manifest,
    unusable images with reasons).

    ``context``: the donor pictures composite ops paste, the same as the copies'.

    The images are taken in a seeded order, each giving one copy, until ``k`` are made; an unreadable one is
    passed over. That is made in parallel (``malle.parallel``) in rounds: each round takes as many images as
    copies are still wanted, planned as if every one were readable; then, in order, the rounds' results get the
    file names one process would have given them. An image's copy depends on its own generator alone, so the
    bytes are those of one process.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, int(SeedStream.DISTRACTOR_ORDER)])
    order = [pool[i] for i in rng.permutation(len(pool))]
    rows: list[dict] = []
    skipped: list[dict] = []
    names: set[str] = set()
    written: set[str] = set()
    bar = progress(total=k, desc="distractor queries") if progress else None
    start = 0
    while len(rows) < k and start < len(order):
        batch = order[start:start + k - len(rows)]
        start += len(batch)
        planned = set(names)  # the names as if every image of the round were readable
        jobs = [_DistractorJob(c, _tokens(c, planned), config, seed, out_dir, context) for c in batch]
        # Every job of the round runs to its end (no early exit), so no worker writes after the clean-up.
        for job, made in zip(jobs, parallel.ordered_map(_distractor_copy, jobs)):
            if isinstance(made, str):
                skipped.append({"path": job.candidate.rel, "reason": made})
                continue
            written.add(made["file"])
            rows.append({**_as_one_process(job, made, names, written), "origin": job.candidate.rel,
                         "kind": COPY_KIND})
            if bar:
                bar.update(1)
    _remove_unkept(out_dir, written - {row["file"] for row in rows})
    if bar:
        bar.close()
    return pd.DataFrame(rows, columns=DISTRACTOR_COLUMNS), skipped


def _image_rng(candidate: Candidate, seed: int) -> np.random.Generator:
    return copy_rng(seed, f"distractor:{candidate.rel}")


def _tokens(candidate: Candidate, taken: set[str]) -> tuple[str, str]:
    _, class_token, instance = original_name(candidate, taken)
    return class_token, instance


@dataclass(frozen=True)
class _DistractorJob:
    candidate: Candidate
    tokens: tuple[str, str]  # its file-name tokens as planned; checked against one process's in order
    config: AugmentConfig
    seed: int
    out_dir: Path
    context: OpContext


def _distractor_copy(job: _DistractorJob) -> dict | str:
    """The image's copy, written (a worker's part); the reason when it cannot be read."""
    try:
        img = load_rgb(job.candidate.path)
    except BadImage as err:
        return str(err)
    return _write(job, img)


def _write(job: _DistractorJob, img) -> dict:
    [row] = write_copies(img, _image_rng(job.candidate, job.seed), 1, job.tokens, "", job.candidate.label,
                         job.config, job.out_dir, job.context)
    return row


def _as_one_process(job: _DistractorJob, made: dict, names: set[str], written: set[str]) -> dict:
    """The image's row with the file-name tokens one process gives it: in the order images are read, so an
    unreadable image earlier takes none. On the rare name clash that planning guessed otherwise, the copy is
    made again here under the right name (``written`` records it)."""
    tokens = _tokens(job.candidate, names)
    if tokens != job.tokens:
        job = _DistractorJob(job.candidate, tokens, job.config, job.seed, job.out_dir, job.context)
        made = _write(job, load_rgb(job.candidate.path))
        written.add(made["file"])
    return made


def _remove_unkept(out_dir: Path, files: set[str]) -> None:
    for name in files:
        (out_dir / name).unlink(missing_ok=True)

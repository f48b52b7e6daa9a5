"""Distractor queries: copies of spare images that are not in the database (``make_distractors``).

Distractor queries look like copies but have no original in the database, so a method that "finds" one has made
a false match. Each spare image gets copies drawn from the same chain distribution as the originals' (its
generator seeded by the run seed and its path), until the requested number is reached. Which images may serve
is ``malle.data.pools``' decision; the order they are tried in is its ``SeedStream.DISTRACTOR_ORDER``.
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

DISTRACTOR_COLUMNS = [*MANIFEST_COLUMNS, "origin"]  # origin: the spare image, relative to the dataset


def make_distractors(pool: list[Candidate], k: int, out_dir: Path, config: AugmentConfig, seed: int,
                     progress: Callable | None = None,
                     context: OpContext = NO_CONTEXT) -> tuple[pd.DataFrame, list[dict]]:
    """Up to ``k`` distractor queries written into ``out_dir``: (their manifest, unusable images with reasons).

    ``context``: the donor pictures composite ops paste, the same as the copies'.

    The images are taken in a seeded order, each giving its drawn number of copies until ``k`` are made, and
    an unreadable one is passed over. That is made in parallel (``malle.parallel``) in rounds: each round
    plans the images it needs as if every one were readable, and every image makes all its drawn copies in a
    worker; then, in order, the rounds' results are cut to what one process would have kept (the last image
    gives only the copies still wanted, the first of its own), and files not kept are removed. An image's
    copies depend on its own generator alone, so the bytes are those of one process.
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
        batch = _round(order, start, k - len(rows), seed, config)
        start += len(batch)
        planned = set(names)  # the names as if every image of the round were readable
        jobs = [_DistractorJob(c, _tokens(c, planned), config, seed, out_dir, context) for c in batch]
        # Every job of the round runs to its end (no early exit), so no worker writes after the clean-up.
        for job, made in zip(jobs, parallel.ordered_map(_distractor_copies, jobs)):
            if isinstance(made, str):
                skipped.append({"path": job.candidate.rel, "reason": made})
                continue
            written |= {row["file"] for row in made}
            made = _as_one_process(job, made, names, written)[:k - len(rows)]
            rows += [{**row, "origin": job.candidate.rel} for row in made]
            if bar:
                bar.update(len(made))
    _remove_unkept(out_dir, written - {row["file"] for row in rows})
    if bar:
        bar.close()
    return pd.DataFrame(rows, columns=DISTRACTOR_COLUMNS), skipped


def _round(order: list[Candidate], start: int, wanted: int, seed: int, config: AugmentConfig) -> list[Candidate]:
    """The images from ``start`` on that give ``wanted`` copies if all are readable."""
    batch, planned = [], 0
    for candidate in order[start:]:
        if planned >= wanted:
            break
        batch.append(candidate)
        planned += _drawn_count(candidate, seed, config)
    return batch


def _image_rng(candidate: Candidate, seed: int) -> np.random.Generator:
    return copy_rng(seed, f"distractor:{candidate.rel}")


def _drawn_count(candidate: Candidate, seed: int, config: AugmentConfig) -> int:
    """How many copies the image's own generator draws (its first draw, as ``_distractor_copies`` makes it)."""
    return int(_image_rng(candidate, seed).choice(config.copies))


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


def _distractor_copies(job: _DistractorJob) -> list[dict] | str:
    """All the copies the image draws, written (a worker's part); the reason when it cannot be read."""
    try:
        img = load_rgb(job.candidate.path)
    except BadImage as err:
        return str(err)
    return _write(job, img, _drawn_count(job.candidate, job.seed, job.config))


def _write(job: _DistractorJob, img, n: int) -> list[dict]:
    image_rng = _image_rng(job.candidate, job.seed)
    image_rng.choice(job.config.copies)  # the count, drawn first: the chains come after it
    return write_copies(img, image_rng, n, job.tokens, "", job.candidate.label, job.config, job.out_dir,
                        job.context)


def _as_one_process(job: _DistractorJob, made: list[dict], names: set[str], written: set[str]) -> list[dict]:
    """The image's rows with the file-name tokens one process gives it: in the order images are read, so an
    unreadable image earlier takes none. On the rare name clash that planning guessed otherwise, the image is
    made again here under the right names (``written`` records them). Chains are drawn one copy after another
    from the image's generator, so the caller may keep the first copies alone."""
    tokens = _tokens(job.candidate, names)
    if tokens != job.tokens:
        job = _DistractorJob(job.candidate, tokens, job.config, job.seed, job.out_dir, job.context)
        made = _write(job, load_rgb(job.candidate.path), len(made))
        written |= {row["file"] for row in made}
    return made


def _remove_unkept(out_dir: Path, files: set[str]) -> None:
    for name in files:
        (out_dir / name).unlink(missing_ok=True)

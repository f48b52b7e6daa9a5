"""Score normalisation against a background set, as SSCD's ``disc_eval.py`` defines it.

For each query, search a background set of images known to be neither references nor queries, and
subtract ``beta`` times the mean similarity of its background neighbours at ranks ``first..last``
(1-based) from every score of that query. SSCD's published setting (``--score_norm 1.0[0,2]``) is
beta 1.0 over ranks 1 to 3; that is the default here, chosen from the literature and not tuned on
Malle's data. Ranking within one query does not change, so Recall@K does not move; µAP and recall
at precision 0.9 do, because queries that resemble many things fall down the global list.

``--score-norm`` takes another setting in SSCD's own syntax, ``BETA[FIRST,LAST]`` with zero-based,
inclusive neighbour indices, so a setting copied from SSCD's evaluation means the same here. Choose it
on data apart from the evaluation set, as SSCD chose its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import faiss
import numpy as np

from malle.errors import ConfigError

# BETA[FIRST,LAST] or BETA[INDEX]: weight, then zero-based inclusive background neighbour indices
SSCD_SYNTAX = re.compile(r"(?P<beta>\d+(?:\.\d*)?|\.\d+)\[\s*(?P<first>\d+)\s*(?:,\s*(?P<last>\d+)\s*)?\]")


DEFAULT_SCORE_NORM = "1[0,2]"  # SSCD's published --score_norm: beta 1 over background ranks 1-3


@dataclass(frozen=True)
class ScoreNormalisation:
    beta: float = 1.0  # SSCD: weight 1.0
    first: int = 1  # SSCD: background ranks [0, 2] zero-based, i.e. 1..3
    last: int = 3

    def __post_init__(self):
        if not 1 <= self.first <= self.last:
            raise ConfigError(f"score normalisation needs 1 <= first <= last (got {self.first}..{self.last})")
        if not np.isfinite(self.beta) or self.beta < 0:
            raise ConfigError(f"score normalisation needs beta >= 0 (got {self.beta})")

    @classmethod
    def parse(cls, text: str) -> ScoreNormalisation:
        """SSCD's ``--score_norm`` syntax: ``BETA[FIRST,LAST]`` or ``BETA[INDEX]``, indices zero-based."""
        found = SSCD_SYNTAX.fullmatch(str(text).strip())
        if found is None:
            raise ConfigError(f"--score-norm {text!r}: expected BETA[FIRST,LAST] with zero-based neighbour indices, "
                              "as in SSCD's disc_eval.py (e.g. 1.0[0,2], the default: beta 1 over ranks 1-3)")
        first = int(found["first"])
        last = int(found["last"]) if found["last"] is not None else first
        return cls(beta=float(found["beta"]), first=first + 1, last=last + 1)

    def spec(self) -> str:
        """This setting in SSCD's syntax (what ``parse`` reads)."""
        return f"{self.beta:g}[{self.first - 1},{self.last - 1}]"

    def describe(self) -> str:
        return f"score - {self.beta:g} x mean background similarity at ranks {self.first}-{self.last}"


def background_index(background: np.ndarray) -> faiss.IndexFlatIP:
    """An exact inner-product index of L2-normalised float32 background descriptors."""
    background = np.ascontiguousarray(background, dtype=np.float32)
    index = faiss.IndexFlatIP(background.shape[1])
    index.add(background)
    return index


def background_similarity(queries: np.ndarray, index: faiss.Index, norm: ScoreNormalisation) -> np.ndarray:
    """Per query, the mean similarity of its background neighbours at ranks ``first..last``."""
    if index.ntotal < norm.last:
        raise ConfigError(f"the background set holds {index.ntotal} images; score normalisation at ranks "
                          f"{norm.first}-{norm.last} needs at least {norm.last}")
    if not len(queries):
        return np.zeros(0, dtype=np.float64)
    sims, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), norm.last)
    return sims[:, norm.first - 1:norm.last].astype(np.float64).mean(axis=1)


def normalise(scores: np.ndarray, background: np.ndarray, norm: ScoreNormalisation) -> np.ndarray:
    """``scores`` (queries x candidates, similarities) less ``beta`` times each query's background similarity."""
    return np.asarray(scores, dtype=np.float64) - norm.beta * np.asarray(background, dtype=np.float64)[:, None]

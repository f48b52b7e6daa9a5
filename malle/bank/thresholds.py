"""Where a collection's threshold comes from: the lab's own measurement, not a guess.

A lab run (``malle run``) writes ``openset.csv`` with each method's ``threshold_at_p90``: the score at
which the pooled predictions of copies and distractors keep precision 0.9 at the highest recall
(``malle.evaluation.micro_ap``). ``bank create --threshold-from OUT`` takes it from the user's own run; without it,
the collection gets the default below, measured the same way on the reproduction run. Thresholds are
stored in the metric's own unit (cosine similarity; Hamming distance in bits), while ``openset.csv``
states them as similarities (hashes: minus the distance), so they are converted on the way in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from malle.errors import ConfigError
from malle.retrieval.metrics import Metric

OPENSET_CSV = "openset.csv"
# Where the defaults were measured: the reproduction run of README's "Reproduce" section.
REPRODUCTION = ("malle run --data imagenet-200x5/val --n 200 --seed 0 --precision fp32 (1,216 copies, "
                "1,216 distractor queries), 2026-12-01, Intel Xeon (AMX, avx512_vnni, avx512_bf16), 2 cores")


@dataclass(frozen=True)
class Calibrated:
    """Defaults in the metric's unit, measured on the reproduction run's open set (copies and distractors):

    * ``threshold``: at precision 0.9, with the recall it gave; for matching queries against a bank;
    * ``no_false_match``: the closest any non-copy came among every query's top predictions, made one step
      stricter, so no false match of that run passes it; for ``dedup``, which tests every pair of a folder
      (n²/2 chances of a false match instead of a query's few) and at the precision-0.9 threshold grouped
      unrelated photos (README, Service).
    """

    method: str
    threshold: float
    recall_at_p90: float
    no_false_match: float

    @property
    def source(self) -> str:
        return "default: threshold at precision 0.9 on the reproduction run (imagenet-200x5, n 200, seed 0, 2026-12-01)"


DEFAULTS: dict[str, Calibrated] = {c.method: c for c in (
    Calibrated("sscd_distilled", 0.235949, 0.9794, 0.371273),
    Calibrated("sscd", 0.223624, 0.9827, 0.292309),
    Calibrated("efficientnet_lite2", 0.634831, 0.8684, 0.827397),
    Calibrated("pdq", 94, 0.4227, 83),
    Calibrated("phash", 14, 0.3923, 11),
)}


def check(threshold: float, metric: Metric, dim: int) -> float:
    """A threshold within the metric's range: cosine -1..1, Hamming 0..bits."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold must be a number (got {threshold!r})") from None
    low, high = (0.0, float(dim)) if metric.binary else (-1.0, 1.0)
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"threshold {threshold!r} is outside the {metric.score_name} range {low:g}..{high:g}")
    return value


def from_lab(folder: str | Path, method: str, metric: Metric, dim: int) -> tuple[float, str]:
    """(threshold in the metric's unit, where it came from) from a lab run's ``openset.csv``."""
    path = Path(folder).expanduser()
    path = path / OPENSET_CSV if path.is_dir() else path
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--threshold-from {folder}: cannot read {path.name} ({err})") from None
    if not {"method", "threshold_at_p90"} <= set(table.columns):
        raise ConfigError(f"--threshold-from {folder}: {path.name} has no threshold_at_p90 column")
    rows = table[table["method"] == method]
    if rows.empty:
        raise ConfigError(f"--threshold-from {folder}: the run did not evaluate {method} "
                          f"(it has {', '.join(map(str, table['method']))})")
    similarity = float(rows["threshold_at_p90"].iloc[0])
    if not math.isfinite(similarity):
        raise ConfigError(f"--threshold-from {folder}: {method} never reached precision 0.9 in that run, "
                          "so it has no threshold; pass --threshold")
    value = check(metric.from_similarity(similarity), metric, dim)
    return value, f"threshold at precision 0.9 of {method} in {path.resolve()}"


def choose(method: str, metric: Metric, dim: int, threshold: float | None = None,
           threshold_from: str | Path | None = None) -> tuple[float, str]:
    """An explicit threshold, else the lab run's, else the calibrated default; with its source."""
    if threshold is not None and threshold_from is not None:
        raise ConfigError("give either a threshold or --threshold-from, not both")
    if threshold is not None:
        return check(threshold, metric, dim), "given"
    if threshold_from is not None:
        return from_lab(threshold_from, method, metric, dim)
    calibrated = DEFAULTS.get(method)
    if calibrated is None:
        raise ConfigError(f"{method} has no calibrated default threshold (calibrated: {', '.join(DEFAULTS)}); "
                          "pass a threshold or --threshold-from a lab run's output folder")
    return calibrated.threshold, calibrated.source

"""Where a collection's threshold comes from: the lab's own measurement, not a guess.

A lab run (``malle run``) writes ``openset.csv`` with each method's ``threshold_at_p90``: the score at
which the pooled predictions of copies and distractors keep precision 0.9 at the highest recall
(``malle.evaluation.micro_ap``). ``bank create --threshold-from OUT`` takes it from the user's own run; without it,
the collection gets the default below (``REPRODUCTION`` says how it was measured). Thresholds are
stored in the metric's own unit (cosine similarity; Hamming distance in bits), while ``openset.csv``
states them as similarities (hashes: minus the distance), so they are converted on the way in.

A collection may ask for another precision than 0.9 (``--precision-target 0.95``): the threshold is then found in
the run's pooled predictions (``predictions.parquet``), the same way, so it needs ``--threshold-from``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from malle.errors import ConfigError
from malle.evaluation import micro_ap
from malle.evaluation.micro_ap import TARGET_PRECISION
from malle.retrieval.metrics import Metric

OPENSET_CSV = "openset.csv"
PREDICTIONS = "predictions.parquet"
# Where the defaults were measured: the hard preset with its hard negatives in the open set (bench/hard_preset.py),
# made stricter where that let a solid-colour, near-uniform or text-only query through (bench/uninformative_queries.py).
REPRODUCTION = ("python bench/hard_preset.py --precision fp32 (malle run --data imagenet-200x5/val --preset hard "
                "--n 200 --distractors 500 --seed 0: 1,216 copies, 375 copies of spare photos and 125 hard negatives), "
                "each threshold at precision 0.9 or, where stricter, the first that no solid-colour, near-uniform or "
                "text-only query passed against 900 of those photos, rounded up to 0.01 (sscd_distilled 0.2360 -> "
                "0.29, sscd 0.1965 -> 0.24, efficientnet_lite2 0.6218 -> 0.65, pdq 94 -> 91 bits; phash 14 held), "
                "2026-12-03, AMD EPYC (Zen 4, avx512_vnni, avx512_bf16), 2 shared cores; no_false_match from the "
                "reference-preset run of 2026-12-01 (1,216 distractor queries), stricter than this run's")


@dataclass(frozen=True)
class Calibrated:
    """Defaults in the metric's unit, measured on open sets of copies and distractors (``REPRODUCTION``):

    * ``threshold``: at precision 0.9 with hard negatives in the open set, or stricter where that let an
      uninformative query (solid colour, near-uniform, text) match; ``recall_at_p90`` is the recall it gave there
      (at precision 0.9 or above); for matching queries against a bank;
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
        return ("default: threshold at precision 0.9 on the hard preset with hard negatives, no looser than refuses "
                "blank and text images (imagenet-200x5, n 200, seed 0, 2026-12-03)")


DEFAULTS: dict[str, Calibrated] = {c.method: c for c in (
    Calibrated("sscd_distilled", 0.29, 0.4753, 0.371273),
    Calibrated("sscd", 0.24, 0.5354, 0.292309),
    Calibrated("efficientnet_lite2", 0.65, 0.3100, 0.827397),
    Calibrated("pdq", 91, 0.1678, 83),
    Calibrated("phash", 14, 0.1604, 11),
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


def check_target(target: float) -> float:
    """A precision target within (0, 1]."""
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ConfigError(f"--precision-target must be a number (got {target!r})") from None
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ConfigError(f"--precision-target must be above 0 and at most 1 (got {target!r})")
    return value


def run_file(folder: str | Path, name: str) -> Path:
    """``name`` in the lab run's folder ``folder`` (or ``folder`` itself when it names that file)."""
    path = Path(folder).expanduser()
    return path / name if path.is_dir() else path.with_name(name)


def from_lab(folder: str | Path, method: str, metric: Metric, dim: int,
             target: float = TARGET_PRECISION) -> tuple[float, str]:
    """(threshold in the metric's unit, where it came from): the lab run's threshold at precision ``target``;
    at 0.9 its ``openset.csv``'s ``threshold_at_p90``, at another target found in its ``predictions.parquet``."""
    if target == TARGET_PRECISION:
        similarity, path = _openset_threshold(folder, method)
    else:
        similarity, path = _predictions_threshold(folder, method, target)
    if not math.isfinite(similarity):
        raise ConfigError(f"--threshold-from {folder}: {method} never reached precision {target:g} in that run, "
                          "so it has no threshold; pass --threshold or a lower --precision-target")
    value = check(metric.from_similarity(similarity), metric, dim)
    return value, f"threshold at precision {target:g} of {method} in {path.resolve()}"


def _openset_threshold(folder: str | Path, method: str) -> tuple[float, Path]:
    path = Path(folder).expanduser()
    path = path / OPENSET_CSV if path.is_dir() else path
    table = _read(folder, path, pd.read_csv)
    if not {"method", "threshold_at_p90"} <= set(table.columns):
        raise ConfigError(f"--threshold-from {folder}: {path.name} has no threshold_at_p90 column")
    rows = _rows_of(folder, path, table, method)
    return float(rows["threshold_at_p90"].iloc[0]), path


def _predictions_threshold(folder: str | Path, method: str, target: float) -> tuple[float, Path]:
    """The threshold (a similarity) at precision ``target`` and the highest recall, as ``micro_ap`` defines the
    one at 0.9, from the run's pooled predictions and its count of copies."""
    path = run_file(folder, PREDICTIONS)
    predictions = _rows_of(folder, path, _read(folder, path, pd.read_parquet), method)
    openset = _read(folder, run_file(folder, OPENSET_CSV), pd.read_csv)
    positives = _rows_of(folder, run_file(folder, OPENSET_CSV), openset, method)["n_positives"].iloc[0]
    curve = micro_ap.precision_recall(predictions["is_match"].to_numpy(), predictions["score"].to_numpy(),
                                      int(positives))
    return micro_ap.recall_at_precision(curve, target)[1], path


def _read(folder: str | Path, path: Path, reader) -> pd.DataFrame:
    try:
        return reader(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--threshold-from {folder}: cannot read {path.name} ({err})") from None


def _rows_of(folder: str | Path, path: Path, table: pd.DataFrame, method: str) -> pd.DataFrame:
    if "method" not in table.columns:
        raise ConfigError(f"--threshold-from {folder}: {path.name} has no method column")
    rows = table[table["method"] == method]
    if rows.empty:
        raise ConfigError(f"--threshold-from {folder}: the run did not evaluate {method} "
                          f"(it has {', '.join(map(str, table['method'].unique()))})")
    return rows


def choose(method: str, metric: Metric, dim: int, threshold: float | None = None,
           threshold_from: str | Path | None = None, target: float | None = None) -> tuple[float, str]:
    """An explicit threshold, else the lab run's at precision ``target`` (default 0.9), else the calibrated default
    (measured at 0.9 only); with its source."""
    if threshold is not None and threshold_from is not None:
        raise ConfigError("give either a threshold or --threshold-from, not both")
    if threshold is not None and target is not None:
        raise ConfigError("give either a threshold or --precision-target, not both")
    target = TARGET_PRECISION if target is None else check_target(target)
    if threshold is not None:
        return check(threshold, metric, dim), "given"
    if threshold_from is not None:
        return from_lab(threshold_from, method, metric, dim, target)
    if target != TARGET_PRECISION:
        raise ConfigError(f"--precision-target {target:g} needs a lab run: pass --threshold-from OUT (a `malle run "
                          f"--out OUT` folder); the calibrated defaults are at precision {TARGET_PRECISION:g} only")
    calibrated = DEFAULTS.get(method)
    if calibrated is None:
        raise ConfigError(f"{method} has no calibrated default threshold (calibrated: {', '.join(DEFAULTS)}); "
                          "pass a threshold or --threshold-from a lab run's output folder")
    return calibrated.threshold, calibrated.source

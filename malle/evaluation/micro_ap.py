"""Open-set copy detection: micro average precision and recall at a precision, as ISC2021 defines them.

Every prediction of every query (copies and distractors alike) is pooled into one
list and sorted by score, highest first. Among equal scores the non-matches come
first, so a method gains nothing from tied scores (the ISC2021 reference's rule,
which gives the worst AP a tie allows). Precision and recall are computed at every
position; recall's denominator is the number of ground-truth pairs (one per copy
query), so a copy whose original never appears among the predictions caps recall.

* µAP = sum over positions of precision × (increase of recall there);
* recall at precision 0.9 = the largest recall among positions whose precision is
  at least 0.9, with the score there as the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TARGET_PRECISION = 0.9


@dataclass(frozen=True)
class OpenSetScores:
    uap: float
    recall_at_p90: float
    threshold_at_p90: float  # NaN when no position reaches the target precision
    n_queries: int
    n_positives: int


def precision_recall(is_match: np.ndarray, scores: np.ndarray, n_positives: int) -> pd.DataFrame:
    """Precision, recall and threshold at every position of the pooled predictions, best score first."""
    is_match = np.asarray(is_match, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    # lexsort sorts by the last key first: score descending, then non-matches (False) before matches.
    order = np.lexsort((is_match, -scores))
    hits = np.cumsum(is_match[order])
    return pd.DataFrame({
        "threshold": scores[order],
        "precision": hits / np.arange(1, len(order) + 1),
        "recall": hits / max(n_positives, 1),
    })


def micro_average_precision(curve: pd.DataFrame) -> float:
    recall = curve["recall"].to_numpy()
    gained = np.diff(recall, prepend=0.0)
    return float((gained * curve["precision"].to_numpy()).sum())


def recall_at_precision(curve: pd.DataFrame, target: float = TARGET_PRECISION) -> tuple[float, float]:
    """(largest recall with precision >= target, the threshold there); (0, NaN) when none reaches it."""
    reached = curve[curve["precision"] >= target]
    if reached.empty:
        return 0.0, float("nan")
    best = reached["recall"].to_numpy().argmax()
    return float(reached["recall"].iloc[best]), float(reached["threshold"].iloc[best])


def score(predictions: pd.DataFrame, n_positives: int) -> tuple[OpenSetScores, pd.DataFrame]:
    """µAP, recall at precision 0.9 and the precision-recall curve of one method's predictions
    (columns ``query``, ``score`` as similarity, ``is_match``)."""
    curve = precision_recall(predictions["is_match"].to_numpy(), predictions["score"].to_numpy(), n_positives)
    recall, threshold = recall_at_precision(curve)
    found = OpenSetScores(micro_average_precision(curve), recall, threshold, int(predictions["query"].nunique()),
                          int(n_positives))
    return found, curve


def at_threshold(predictions: pd.DataFrame, threshold: float, n_positives: int) -> dict:
    """What accepting every prediction scoring at least ``threshold`` gives: precision, recall, false positives."""
    accepted = predictions[predictions["score"] >= threshold]
    true_positives = int(accepted["is_match"].sum())
    return {"threshold": threshold, "accepted": len(accepted), "true_positives": true_positives,
            "false_positives": len(accepted) - true_positives,
            "precision": true_positives / len(accepted) if len(accepted) else float("nan"),
            "recall": true_positives / max(n_positives, 1)}


def threshold_for_precision(curve: pd.DataFrame, target: float) -> float:
    """The lowest threshold whose precision is at least ``target`` (NaN if none)."""
    reached = curve[curve["precision"] >= target]
    return float(reached["threshold"].min()) if len(reached) else float("nan")

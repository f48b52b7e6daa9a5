"""Calibrated confidence: a monotone map from a method's score to the probability that a prediction is a true copy.

A score answers "how close?" in each method's own unit (cosine similarity, Hamming bits); a user asks "how sure?",
and wants the answer to mean the same for every method. From a run's pooled open-set predictions (the table
``malle.evaluation.micro_ap`` scores: every query's top predictions, copies and distractor queries alike, each
with its score and whether it is the true original), an isotonic regression fits the share of true copies as a
non-decreasing function of similarity (pool-adjacent-violators, ``isotonic``): 0.8 then means that about 8 in 10
predictions scoring there were true copies, whatever the method.

How good the map is gets measured on predictions that did not fit it: the queries are split into ``folds`` by a
seeded hash of the query id, each fold's predictions are scored by the map fitted on the other folds (a query's
predictions all sit in one fold, so none of them helps fit the map that scores it), and the expected calibration
error (``ece``) over equal-mass bins of those held-back probabilities says how far stated and observed shares
of true copies are apart. The map for use (``Calibration.map``) is then fitted on every query.

Maps are stated in the metric's own unit (``malle.retrieval.metrics``): increasing in cosine similarity,
decreasing in Hamming distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from malle.errors import ConfigError
from malle.retrieval.metrics import Metric

FOLDS = 5
BINS = 15
SEED = 0
RELIABILITY_COLUMNS = ["bin", "confidence", "observed", "count"]


def isotonic(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing fit of ``y`` on ``x`` with the least weighted squared error (pool-adjacent-violators).

    Returns (knots, values): the distinct ``x`` at which the fitted value changes level, increasing, each with its
    fitted value. Equal ``x`` always get one value (their mean enters the fit with their summed weight)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    weight = np.ones_like(y) if weight is None else np.asarray(weight, np.float64).ravel()
    knots, first = np.unique(x, return_inverse=True)
    w = np.bincount(first, weights=weight, minlength=len(knots))
    mean = np.bincount(first, weights=weight * y, minlength=len(knots)) / w
    # Blocks of adjacent knots pooled so far, as (value, weight, first knot); a new knot below the last block's
    # value merges into it until the values rise again.
    values: list[float] = []
    weights: list[float] = []
    starts: list[int] = []
    for i in range(len(knots)):
        value, total, start = mean[i], w[i], i
        while values and values[-1] >= value:
            value = (values[-1] * weights[-1] + value * total) / (weights[-1] + total)
            total += weights.pop()
            start = starts.pop()
            values.pop()
        values.append(value)
        weights.append(total)
        starts.append(start)
    fitted = np.repeat(values, np.diff([*starts, len(knots)]))
    return knots, fitted


def _level_ends(knots: np.ndarray, fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Only the first and last knot of each level: the same step-linear curve with far fewer points."""
    if len(knots) <= 2:
        return knots, fitted
    changes = np.flatnonzero(np.diff(fitted)) + 1
    keep = np.unique(np.concatenate([[0, len(knots) - 1], changes, changes - 1]))
    return knots[keep], fitted[keep]


@dataclass(frozen=True)
class ConfidenceMap:
    """Score -> probability of a true copy: the isotonic fit's levels, joined linearly between them and flat
    beyond the ends. ``similarity`` holds the knots as similarities (increasing), whatever the metric."""

    metric: Metric
    similarity: np.ndarray
    probability: np.ndarray

    @classmethod
    def fit(cls, similarity: np.ndarray, is_match: np.ndarray, metric: Metric) -> ConfidenceMap:
        if len(similarity) == 0:
            raise ValueError("a confidence map needs at least one prediction")
        knots, fitted = _level_ends(*isotonic(similarity, np.asarray(is_match, np.float64)))
        return cls(metric, knots, np.clip(fitted, 0.0, 1.0))

    def of_similarity(self, similarity: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(similarity, np.float64), self.similarity, self.probability)

    def __call__(self, scores) -> np.ndarray:
        """Probabilities for scores in the metric's own unit (a cosine, or a Hamming distance)."""
        return self.of_similarity(self.metric.similarity(np.atleast_1d(np.asarray(scores, np.float64))))

    def as_json(self) -> dict:
        """``{"metric", "scores", "probabilities"}``, scores in the metric's unit and ascending (so a Hamming map's
        probabilities fall)."""
        native = np.array([self.metric.from_similarity(s) + 0.0 for s in self.similarity])
        order = np.argsort(native, kind="stable")
        return {"metric": self.metric.name, "scores": native[order].tolist(),
                "probabilities": self.probability[order].tolist()}

    @classmethod
    def from_json(cls, data: dict, metric: Metric) -> ConfidenceMap:
        """A stored map, checked: a ConfigError naming what is wrong rather than a wrong confidence later."""
        try:
            scores = np.asarray(data["scores"], np.float64)
            probability = np.asarray(data["probabilities"], np.float64)
        except (KeyError, TypeError, ValueError):
            raise ConfigError("a confidence map needs numeric 'scores' and 'probabilities' lists") from None
        if data.get("metric", metric.name) != metric.name:
            raise ConfigError(f"this confidence map is for the {data['metric']} metric, not {metric.name}")
        if scores.ndim != 1 or scores.shape != probability.shape or len(scores) == 0:
            raise ConfigError("a confidence map's 'scores' and 'probabilities' must be equally long and not empty")
        if not (np.isfinite(scores).all() and np.isfinite(probability).all()
                and ((probability >= 0) & (probability <= 1)).all()):
            raise ConfigError("a confidence map's scores must be finite and its probabilities within 0..1")
        similarity = metric.similarity(scores)
        order = np.argsort(similarity, kind="stable")
        similarity, probability = similarity[order], probability[order]
        if (np.diff(similarity) < 0).any() or (np.diff(probability) < 0).any():
            raise ConfigError("a confidence map must not fall as scores get closer")
        return cls(metric, similarity, probability)


def folds_of(queries: pd.Series, folds: int = FOLDS, seed: int = SEED) -> np.ndarray:
    """Each query's fold, 0..folds-1: a seeded hash of its id, so every prediction of a query lands in one fold
    and the split does not depend on the table's order."""
    key = f"malle-cal-{seed:06d}"[:16]  # pandas' hash key: 16 characters
    hashed = pd.util.hash_pandas_object(pd.Series(queries, dtype=str), index=False, hash_key=key).to_numpy()
    return (hashed % np.uint64(folds)).astype(np.int64)


def held_back(similarity: np.ndarray, is_match: np.ndarray, fold: np.ndarray, metric: Metric) -> np.ndarray:
    """Each prediction's probability from the map fitted on the other folds' predictions (NaN where the other
    folds hold none)."""
    out = np.full(len(similarity), np.nan)
    for f in np.unique(fold):
        test = fold == f
        if (~test).any():
            out[test] = ConfidenceMap.fit(similarity[~test], is_match[~test], metric).of_similarity(similarity[test])
    return out


def reliability(probability: np.ndarray, is_match: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Equal-mass bins of the stated probabilities (sorted, split into ``bins`` parts of equal count): each bin's
    mean stated probability (``confidence``), share of true copies (``observed``) and size."""
    order = np.argsort(probability, kind="stable")
    parts = np.array_split(order, min(bins, len(order))) if len(order) else []
    return pd.DataFrame([{"bin": i, "confidence": float(probability[p].mean()), "observed": float(is_match[p].mean()),
                          "count": len(p)} for i, p in enumerate(parts)], columns=RELIABILITY_COLUMNS)


def expected_calibration_error(curve: pd.DataFrame) -> float:
    """Mean of |stated - observed| over the bins, each weighted by its share of predictions."""
    counts = curve["count"].to_numpy(np.float64)
    gaps = (curve["confidence"] - curve["observed"]).abs().to_numpy()
    return float((gaps * counts).sum() / counts.sum()) if counts.sum() else float("nan")


@dataclass(frozen=True)
class Calibration:
    """One method's calibration: the map for use (fitted on every query) and how well the cross-fitted maps did on
    the predictions they did not see: all of them (``ece``, ``reliability``), and each query's best one alone
    (``ece_top1``, ``reliability_top1``; the match a user looks at first, where true copies are common, whereas
    most of a query's ten predictions are plain non-matches that are easy to call)."""

    map: ConfidenceMap
    ece: float
    reliability: pd.DataFrame
    n_predictions: int
    folds: int
    ece_top1: float = float("nan")
    reliability_top1: pd.DataFrame | None = None

    def as_json(self) -> dict:
        top1 = self.reliability_top1 if self.reliability_top1 is not None else reliability(np.array([]), np.array([]))
        return {"map": self.map.as_json(), "ece": _number(self.ece), "reliability": self.reliability.to_dict("records"),
                "ece_top1": _number(self.ece_top1), "reliability_top1": top1.to_dict("records"),
                "n_predictions": self.n_predictions, "folds": self.folds}


def _number(value: float) -> float | None:
    return None if np.isnan(value) else value


def calibrate(predictions: pd.DataFrame, metric: Metric, folds: int = FOLDS, bins: int = BINS,
              seed: int = SEED) -> Calibration:
    """Calibrate one method from its pooled predictions (columns ``query``, ``score`` as a similarity, as
    ``malle.lab.stages.openset`` writes them, ``is_match`` and ``rank``, 1 for a query's best)."""
    similarity = predictions["score"].to_numpy(np.float64)
    is_match = predictions["is_match"].to_numpy(bool)
    fold = folds_of(predictions["query"], folds, seed)
    probability = held_back(similarity, is_match.astype(np.float64), fold, metric)
    scored = ~np.isnan(probability)
    curve = reliability(probability[scored], is_match[scored], bins)
    best = scored & (predictions["rank"].to_numpy() == 1)
    top1 = reliability(probability[best], is_match[best], bins)
    return Calibration(ConfidenceMap.fit(similarity, is_match, metric), expected_calibration_error(curve), curve,
                       len(predictions), folds, expected_calibration_error(top1), top1)

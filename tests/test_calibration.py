"""Calibrated confidence, the core (``malle.evaluation.calibration``): the isotonic fit against a brute-force
reference, the map in each metric's unit, cross-fitting that never lets a query fit its own map, and the
calibration error."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from malle.errors import ConfigError
from malle.evaluation import calibration as cal
from malle.retrieval.metrics import HAMMING, IP


def brute_force(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The least-squares non-decreasing fit by trying every split of the points into runs: the optimum is constant on
    runs, at each run's mean, so the best monotone candidate among all 2^(n-1) splits is the answer."""
    n, best, best_cost = len(y), None, np.inf
    for cuts in itertools.product((False, True), repeat=n - 1):
        edges = [0, *(i + 1 for i, cut in enumerate(cuts) if cut), n]
        fit = np.concatenate([np.full(b - a, np.average(y[a:b], weights=w[a:b])) for a, b in itertools.pairwise(edges)])
        cost = float((w * (y - fit) ** 2).sum())
        if np.all(np.diff(fit) >= -1e-12) and cost < best_cost - 1e-12:
            best, best_cost = fit, cost
    return best


@pytest.mark.parametrize("seed", range(40))
def test_pav_is_the_brute_force_optimum_on_small_cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    y = rng.integers(0, 2, n).astype(float) if seed % 2 else rng.normal(size=n)
    w = rng.integers(1, 4, n).astype(float)
    knots, fitted = cal.isotonic(np.arange(n, dtype=float), y, w)
    assert np.all(np.diff(fitted) >= 0)
    np.testing.assert_allclose(fitted, brute_force(y, w), atol=1e-12)
    # and no other monotone sequence does better
    cost = (w * (y - fitted) ** 2).sum()
    for _ in range(200):
        other = np.sort(rng.normal(size=n) * 2)
        assert (w * (y - other) ** 2).sum() >= cost - 1e-12


def test_equal_scores_get_one_value():
    knots, fitted = cal.isotonic(np.array([0.5, 0.2, 0.5, 0.5]), np.array([1.0, 0.0, 0.0, 1.0]))
    assert knots.tolist() == [0.2, 0.5] and fitted.tolist() == pytest.approx([0.0, 2 / 3])


def test_a_violation_is_pooled():
    _, fitted = cal.isotonic(np.arange(4.0), np.array([0.0, 1.0, 0.0, 1.0]))
    assert fitted.tolist() == [0.0, 0.5, 0.5, 1.0]


def test_the_map_interpolates_between_levels_and_is_flat_beyond():
    fitted = cal.ConfidenceMap.fit(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), IP)
    assert fitted(0.0)[0] == 0 and fitted(1.0)[0] == 1 and fitted(0.5)[0] == pytest.approx(0.5)
    assert fitted.as_json() == {"metric": "ip", "scores": [0.1, 0.2, 0.8, 0.9], "probabilities": [0, 0, 1, 1]}


def test_a_hamming_map_is_stated_in_bits_and_falls_with_distance():
    distance = np.array([2, 4, 10, 30, 40])
    fitted = cal.ConfidenceMap.fit(HAMMING.similarity(distance), np.array([1, 1, 0, 1, 0]), HAMMING)
    stored = fitted.as_json()
    assert stored["scores"] == [2, 4, 10, 30, 40] and np.all(np.diff(stored["probabilities"]) <= 0)
    assert fitted(np.array([2, 40])).tolist() == [1.0, 0.0]
    again = cal.ConfidenceMap.from_json(stored, HAMMING)
    np.testing.assert_array_equal(again(np.arange(50)), fitted(np.arange(50)))


@pytest.mark.parametrize("bad, words", [
    ({"scores": [0.1, 0.2], "probabilities": [0.9, 0.1]}, "must not fall"),
    ({"scores": [0.1, 0.2], "probabilities": [0.1]}, "equally long"),
    ({"scores": [0.1], "probabilities": [1.5]}, "within 0..1"),
    ({"scores": "x"}, "numeric"),
    ({"metric": "hamming", "scores": [1], "probabilities": [0.5]}, "for the hamming metric"),
])
def test_a_damaged_map_is_refused_in_one_line(bad, words):
    with pytest.raises(ConfigError, match=words):
        cal.ConfidenceMap.from_json(bad, IP)


def predictions(n_queries: int, seed: int = 0, per_query: int = 5) -> pd.DataFrame:
    """Scores uniform on 0..1, each prediction a true copy with probability equal to its score: a score that is
    its own calibrated probability."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(size=n_queries * per_query)
    return pd.DataFrame({"query": np.repeat([f"q{i}" for i in range(n_queries)], per_query), "score": score,
                         "is_match": rng.uniform(size=len(score)) < score,
                         "rank": np.tile(np.arange(1, per_query + 1), n_queries)})


def test_folds_keep_a_query_together_and_follow_the_seed_not_the_order():
    table = predictions(200)
    folds = cal.folds_of(table["query"])
    assert table.assign(fold=folds).groupby("query")["fold"].nunique().max() == 1
    assert set(folds) == set(range(cal.FOLDS))
    shuffled = table.sample(frac=1, random_state=3)
    np.testing.assert_array_equal(cal.folds_of(shuffled["query"]), folds[shuffled.index])
    assert (cal.folds_of(table["query"], seed=1) != folds).any()


def test_a_querys_own_predictions_never_fit_the_map_that_scores_it():
    """One copy query scores far above every other query, which are all non-matches. Fitted on everything, the map
    says 1 there; cross-fitted, that query is scored by a map that never saw it, which knows only non-matches."""
    table = pd.DataFrame({"query": ["lone", *(f"d{i}" for i in range(50))],
                          "score": [0.99, *np.linspace(0.1, 0.5, 50)], "is_match": [True] + [False] * 50})
    fold = cal.folds_of(table["query"])
    held = cal.held_back(table["score"].to_numpy(), table["is_match"].to_numpy(float), fold, IP)
    assert cal.ConfidenceMap.fit(table["score"].to_numpy(), table["is_match"].to_numpy(), IP)(0.99)[0] == 1.0
    assert held[0] == 0.0


def test_changing_a_querys_own_labels_leaves_its_held_back_probabilities_alone():
    table = predictions(120, seed=5)
    fold = cal.folds_of(table["query"])
    score, label = table["score"].to_numpy(), table["is_match"].to_numpy(float)
    before = cal.held_back(score, label, fold, IP)
    own = (table["query"] == "q7").to_numpy()
    flipped = label.copy()
    flipped[own] = 1 - flipped[own]
    after = cal.held_back(score, flipped, fold, IP)
    np.testing.assert_array_equal(after[own], before[own])
    assert not np.array_equal(after[~own], before[~own])  # the other folds' maps did see it


def test_reliability_and_ece_by_hand():
    probability = np.array([0.1, 0.1, 0.2, 0.8, 0.9, 0.9])
    truth = np.array([0, 0, 1, 1, 1, 0], bool)
    curve = cal.reliability(probability, truth, bins=2)
    assert curve["count"].tolist() == [3, 3]
    assert curve["confidence"].tolist() == pytest.approx([0.4 / 3, 2.6 / 3])
    assert curve["observed"].tolist() == pytest.approx([1 / 3, 2 / 3])
    expected = 0.5 * abs(0.4 / 3 - 1 / 3) + 0.5 * abs(2.6 / 3 - 2 / 3)
    assert cal.expected_calibration_error(curve) == pytest.approx(expected)


def test_a_calibrated_score_gives_a_small_ece_and_a_shuffled_label_a_large_one():
    table = predictions(2000, seed=1)
    good = cal.calibrate(table, IP)
    assert good.ece < 0.03 and good.folds == cal.FOLDS and good.n_predictions == len(table)
    assert len(good.reliability) == cal.BINS and good.reliability["count"].sum() == len(table)
    assert good.reliability_top1["count"].sum() == (table["rank"] == 1).sum() and good.ece_top1 < 0.1
    # Scores that say nothing: the map is about flat at the base rate, and still calibrated on held-back queries ...
    noise = table.assign(score=np.random.default_rng(2).uniform(size=len(table)))
    assert cal.calibrate(noise, IP).ece < 0.1
    # ... while stating the raw score as a probability is far off: the ece measures the gap.
    raw = cal.reliability(noise["score"].to_numpy(), noise["is_match"].to_numpy())
    assert cal.expected_calibration_error(raw) > 0.2


def test_the_record_is_plain_json():
    record = cal.calibrate(predictions(50), IP).as_json()
    assert set(record) == {"map", "ece", "reliability", "ece_top1", "reliability_top1", "n_predictions", "folds"}
    assert set(record["reliability"][0]) == set(cal.RELIABILITY_COLUMNS)
    assert json.loads(json.dumps(record, allow_nan=False)) == record  # no numpy types, no NaN

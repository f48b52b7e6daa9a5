"""µAP and recall at precision 0.9 against hand-computed values, including the ISC2021 tie rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from malle.evaluation import micro_ap as openset


def preds(rows):
    return pd.DataFrame(rows, columns=["query", "score", "is_match"])


def test_a_perfect_ranking_has_uap_one():
    p = preds([("q1", 0.9, True), ("q2", 0.8, True), ("d1", 0.3, False)])
    found, _ = openset.score(p, n_positives=2)
    assert found.uap == 1.0 and found.recall_at_p90 == 1.0 and found.threshold_at_p90 == 0.8


def test_hand_computed_uap():
    # Sorted: T(0.9) F(0.8) T(0.7) F(0.6) T(0.5); 4 ground-truth pairs (one copy never retrieved).
    p = preds([("a", 0.9, True), ("b", 0.8, False), ("c", 0.7, True), ("d", 0.6, False), ("e", 0.5, True)])
    found, curve = openset.score(p, n_positives=4)
    # precision at each hit: 1/1, 2/3, 3/5; each hit adds recall 1/4.
    assert found.uap == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    assert curve["recall"].tolist() == [0.25, 0.25, 0.5, 0.5, 0.75]
    assert found.recall_at_p90 == 0.25 and found.threshold_at_p90 == 0.9  # only the first point reaches 0.9


def test_ties_put_non_matches_first():
    """A tie between a match and a non-match counts the non-match first: the worst AP the tie allows."""
    p = preds([("a", 0.5, True), ("b", 0.5, False)])
    found, curve = openset.score(p, n_positives=1)
    assert curve["precision"].tolist() == [0.0, 0.5]
    assert found.uap == 0.5
    # Listing the match first changes nothing.
    assert openset.score(p.iloc[::-1], n_positives=1)[0].uap == 0.5
    # Had the tie been broken in the match's favour the AP would be 1: a constant score cannot win.
    constant = preds([(f"q{i}", 1.0, i < 3) for i in range(10)])
    # all 7 non-matches come first, then the 3 matches at positions 8, 9, 10
    assert openset.score(constant, 3)[0].uap == pytest.approx((1 / 8 + 2 / 9 + 3 / 10) / 3)


def test_a_worked_example_in_the_iscs_style():
    """Three copy queries with two predictions each and two distractor queries, scores as similarities."""
    p = preds([
        ("q1", 0.95, True), ("q1", 0.40, False),
        ("q2", 0.60, False), ("q2", 0.55, True),
        ("q3", 0.30, False), ("q3", 0.20, False),   # q3's original is never predicted
        ("d1", 0.70, False), ("d1", 0.10, False),
        ("d2", 0.55, False), ("d2", 0.05, False),
    ])
    found, curve = openset.score(p, n_positives=3)
    # Order: .95T .70F .60F .55F(d2, tie first) .55T .40F .30F .20F .10F .05F
    # Hits at positions 1 and 5: precision 1 and 2/5, each adds 1/3 recall.
    assert found.uap == pytest.approx((1 + 2 / 5) / 3)
    assert found.recall_at_p90 == pytest.approx(1 / 3) and found.threshold_at_p90 == 0.95
    assert found.n_queries == 5 and found.n_positives == 3
    assert curve["recall"].max() == pytest.approx(2 / 3)


def test_no_point_reaches_the_target_precision():
    p = preds([("d", 0.9, False), ("a", 0.1, True)])
    found, _ = openset.score(p, 1)
    assert found.recall_at_p90 == 0.0 and math.isnan(found.threshold_at_p90)


def test_operating_point_at_a_threshold():
    p = preds([("a", 0.9, True), ("b", 0.8, False), ("c", 0.7, True)])
    point = openset.at_threshold(p, 0.75, n_positives=3)
    assert point["accepted"] == 2 and point["false_positives"] == 1 and point["precision"] == 0.5
    assert point["recall"] == pytest.approx(1 / 3)
    _, curve = openset.score(p, 3)
    assert openset.threshold_for_precision(curve, 0.6) == 0.7
    assert np.isnan(openset.threshold_for_precision(curve.iloc[1:2], 0.9))

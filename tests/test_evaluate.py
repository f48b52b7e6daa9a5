import numpy as np
import pandas as pd
import pytest

from malle.evaluation.recall import (
    filter_by_ops,
    per_op_recall,
    per_query_table,
    recall1_tie_bounds,
    recall_at_k,
    recall_by_chain_length,
    tie_rates,
)
from malle.retrieval.topk import Hits

# Database: two originals of class "a", one of class "b".
ORIGINALS = pd.DataFrame({"file": ["a_1.JPEG", "a_2.JPEG", "b_1.JPEG"], "class": ["a", "a", "b"]})
QUERIES = pd.DataFrame({
    "file": ["q1", "q2", "q3", "q4"],
    "source": ["a_1.JPEG", "a_1.JPEG", "b_1.JPEG", "a_2.JPEG"],
    "class": ["a", "a", "b", "a"],
    "chain_length": [1, 2, 2, 1],
    "ops": ["blur", "blur|jpeg", "jpeg|rotate", "rotate"],
})


def _table(ids, scores, metric="ip"):
    hits = Hits(np.array(ids), np.array(scores, dtype=np.float32 if metric == "ip" else np.int32), metric)
    return per_query_table("m", ORIGINALS, QUERIES, hits, np.zeros(len(ids)))


def test_class_hit_without_instance_hit():
    # q1's top-1 is the wrong original of the right class: class hit at 1, instance only at 2.
    pq = _table([[1, 0, 2], [0, 1, 2], [0, 1, 2], [1, 0, 2]], [[.9, .8, .1]] * 4)
    assert list(pq["rank"]) == [2, 1, 3, 1]
    assert list(pq["class_rank"]) == [1, 1, 3, 1]
    r = recall_at_k(pq, ks=(1, 3)).set_index(["level", "k"])["recall"]
    assert r["instance", 1] == pytest.approx(2 / 4)
    assert r["class", 1] == pytest.approx(3 / 4)
    assert r["instance", 3] == r["class", 3] == 1.0


def test_ranks_beyond_depth_are_missing_and_never_hit():
    hits = Hits(np.array([[1], [1], [0], [1]]), np.array([[.9]] * 4, dtype=np.float32), "ip")
    pq = per_query_table("m", ORIGINALS, QUERIES, hits, np.zeros(4))
    assert pq["rank"].isna().tolist() == [True, True, True, False]
    r = recall_at_k(pq, ks=(1, 11)).set_index(["level", "k"])["recall"]
    assert r["instance", 11] == pytest.approx(0.25)


def test_tied_top1_is_flagged_and_best_wrong_score_skips_the_true_original():
    pq = _table([[0, 1, 2]] * 4, [[3, 3, 9]] * 4, metric="hamming")
    assert pq["top1_tied"].all() and tie_rates(pq)["m"] == 1.0
    assert list(pq["best_wrong_score"]) == [3, 3, 3, 3]  # q1's source is id 0: best wrong is id 1


def test_per_op_and_chain_length_breakdowns():
    pq = _table([[1, 0, 2], [0, 1, 2], [0, 1, 2], [1, 0, 2]], [[.9, .8, .1]] * 4)
    ops = per_op_recall(pq, ks=(1,)).query("level == 'instance'").set_index("op")
    assert ops.loc["blur", "recall"] == pytest.approx(0.5) and ops.loc["blur", "n"] == 2
    assert ops.loc["rotate", "recall"] == pytest.approx(0.5) and ops.loc["jpeg", "n"] == 2
    by_len = recall_by_chain_length(pq, ks=(1,)).query("level == 'instance'").set_index("chain_length")
    assert by_len.loc[1, "recall"] == pytest.approx(0.5) and by_len.loc[2, "recall"] == pytest.approx(0.5)


def test_filter_by_ops():
    pq = _table([[0, 1, 2]] * 4, [[.9, .8, .1]] * 4)
    assert list(filter_by_ops(pq, include=["jpeg"])["query"]) == ["q2", "q3"]
    assert list(filter_by_ops(pq, exclude=["jpeg"])["query"]) == ["q1", "q4"]
    assert list(filter_by_ops(pq, include=["blur"], exclude=["jpeg"])["query"]) == ["q1"]


def test_recall1_tie_bounds_bracket_the_reported_recall():
    # q1: true original tied at the top but listed second (a tie lost by id order);
    # q2: true original alone at the top; q3: tied at the top and listed first; q4: a plain miss.
    ids = [[1, 0, 2], [0, 1, 2], [2, 0, 1], [0, 2, 1]]
    scores = [[3, 3, 9], [1, 5, 9], [2, 2, 9], [1, 4, 9]]
    hits = Hits(np.array(ids), np.array(scores, dtype=np.int32), "hamming")
    true = np.array([3, 1, 2, 9])  # each query's distance to its true original
    pq = per_query_table("m", ORIGINALS, QUERIES, hits, true)
    bounds = recall1_tie_bounds(pq).loc["m"]
    assert bounds["r1_ties_won"] == pytest.approx(3 / 4)   # q1, q2, q3
    assert bounds["r1_ties_lost"] == pytest.approx(1 / 4)  # q2 only
    reported = (pq["rank"] == 1).mean()
    assert reported == pytest.approx(2 / 4)
    assert bounds["r1_ties_lost"] <= reported <= bounds["r1_ties_won"]


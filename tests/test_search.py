import faiss
import numpy as np
import pytest

from malle.errors import ConfigError
from malle.retrieval.metrics import HAMMING, IP, METRICS, metric_named
from malle.retrieval.topk import save_index, search


def _bits(rows):
    return np.packbits(np.array(rows, dtype=np.uint8), axis=1)


def _brute_force(db, queries, metric):
    """Reference ranking: full sort by (score, id), computed without FAISS."""
    out = []
    for q in queries:
        if metric is IP:
            s = db @ q
            out.append(sorted(range(len(db)), key=lambda i: (-s[i], i)))
        else:
            d = np.unpackbits(np.bitwise_xor(db, q), axis=1).sum(1)
            out.append(sorted(range(len(db)), key=lambda i: (d[i], i)))
    return np.array(out)


def test_hamming_ties_break_by_lower_id_even_past_k():
    rng = np.random.default_rng(0)
    db = _bits(rng.integers(0, 2, (300, 64)))
    query = db[7].copy()
    # 30 exact duplicates of the query at scattered ids: a tie group far wider than k.
    dup_ids = rng.choice(300, 30, replace=False)
    db[dup_ids] = query
    hits = search(HAMMING.build_index(db), query[None], k=5, metric=HAMMING)
    expected = sorted(set(dup_ids) | {7})[:5]
    assert list(hits.ids[0]) == expected and list(hits.scores[0]) == [0] * 5
    assert hits.top1_tied[0]


@pytest.mark.parametrize("metric", [IP, HAMMING], ids=["ip", "hamming"])
def test_matches_brute_force_ranking(metric):
    rng = np.random.default_rng(1)
    if metric is IP:
        db = rng.normal(size=(120, 16)).astype(np.float32)
        db /= np.linalg.norm(db, axis=1, keepdims=True)
        db[50] = db[3]  # a float tie
        queries = db[[3, 10, 20]] + 0.01
    else:
        db = _bits(rng.integers(0, 2, (120, 16)))  # 16 bits: many natural ties
        queries = db[[3, 10, 20]]
    hits = search(metric.build_index(db), queries, k=40, metric=metric)
    assert (hits.ids == _brute_force(db, queries, metric)[:, :40]).all()


def test_k_larger_than_database_and_empty_queries():
    db = np.eye(4, dtype=np.float32)
    hits = search(IP.build_index(db), db[:1], k=10, metric=IP)
    assert hits.ids.shape == (1, 4) and hits.ids[0, 0] == 0
    assert search(IP.build_index(db), db[:0], k=3, metric=IP).ids.shape == (0, 3)


@pytest.mark.parametrize("metric", [IP, HAMMING], ids=["ip", "hamming"])
def test_index_round_trips_through_disk(tmp_path, metric):
    rng = np.random.default_rng(2)
    db = rng.normal(size=(20, 8)).astype(np.float32) if metric is IP else _bits(rng.integers(0, 2, (20, 64)))
    index = metric.build_index(db)
    save_index(index, tmp_path / "x.faiss", metric)
    again = metric.read_index(tmp_path / "x.faiss")
    assert isinstance(again, faiss.IndexBinary) == (metric is HAMMING)
    a, b = search(index, db[:3], 5, metric), search(again, db[:3], 5, metric)
    assert (a.ids == b.ids).all() and (a.scores == b.scores).all()
    assert not list(tmp_path.glob(".x.faiss*"))  # no temp file left behind


def test_pair_scores():
    a = _bits([[1] * 8 + [0] * 8, [0] * 16])
    b = _bits([[1] * 16, [0] * 16])
    assert list(HAMMING.pair_scores(a, b)) == [8, 0]
    assert HAMMING.compare(a, b).tolist() == [[8, 8], [16, 0]]
    v = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    assert np.allclose(IP.pair_scores(v, v[::-1]), [0.6, 0.6])


def test_metric_objects_describe_themselves():
    assert METRICS == {"ip": IP, "hamming": HAMMING}
    assert metric_named("hamming") is HAMMING and metric_named("ip").dtype is np.float32
    with pytest.raises(ConfigError, match="unknown metric 'cosine'; known metrics: ip, hamming"):
        metric_named("cosine")
    assert IP.higher_is_better and not HAMMING.higher_is_better
    assert IP.code_width(512) == 512 and HAMMING.code_width(256) == 32
    assert HAMMING.format_score(12, 256) == "12/256 bits"
    # Best first under either metric: the sort key is ascending, the similarity descending.
    assert list(np.argsort(HAMMING.sort_key(np.array([5, 1, 3])))) == [1, 2, 0]
    assert list(np.argsort(IP.sort_key(np.array([0.1, 0.9, 0.5])))) == [1, 2, 0]
    assert list(HAMMING.similarity(np.array([5, 1]))) == [-5, -1]
    assert HAMMING.from_similarity(-5.0) == 5 and IP.from_similarity(0.5) == 0.5

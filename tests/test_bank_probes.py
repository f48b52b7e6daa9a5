"""The build of an IVF collection probes the fewest lists that reach its recall target (``approx.tune_probes``),
on real FAISS indexes built by a real bank; the chosen probes are stored and shown."""

from __future__ import annotations

import sqlite3

import numpy as np

from malle.bank import Bank, NewItem, approx, sha256_of, store
from malle.retrieval import indexes
from malle.retrieval.metrics import METRICS

DIM = 512
LISTS = "IVF64,Flat"


def spread_pairs(pairs: int, seed: int) -> np.ndarray:
    """Codes spread evenly over the sphere, each with one near copy: the nearest neighbour of every code is its
    partner, and where the partner's list ranks among a code's lists is what the probes decide (as for a photo's
    copy in bench/serve_load.py)."""
    rng = np.random.default_rng(seed)
    first = rng.standard_normal((pairs, DIM)).astype(np.float32)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    second = first + 0.04 * rng.standard_normal((pairs, DIM)).astype(np.float32)
    codes = np.concatenate([first, second])
    return (codes / np.linalg.norm(codes, axis=1, keepdims=True)).astype(np.float32)


def built(bank: Bank):
    bank.create_collection("v", "sscd_distilled", threshold=0.5, index=LISTS)
    codes = spread_pairs(2500, 3)
    bank.add_codes("v", [NewItem(sha256_of(c.tobytes()), f"{i}.jpg", c, digest_of="code") for i, c in enumerate(codes)])
    bank.refresh("v")
    coll = bank.collection("v")
    with bank.store.reading() as db:
        ids, records = bank.store.records(coll, db)
    return coll, bank.snapshots.current(coll), approx.CodeSource(bank.store.codes_file(coll), ids, records)


def recall_at(snap, coll, source, nprobe: int) -> float:
    metric = METRICS[coll.metric]
    indexes.set_search_params(snap.index, f"nprobe={nprobe}", metric)
    return approx.measure_recall(snap.index, snap.ids, metric, source, snap.version)[0]


def test_the_build_probes_the_fewest_lists_that_reach_the_target(bank):
    coll, snap, source = built(bank)
    chosen = int(coll.search_params.removeprefix("nprobe="))
    assert snap.search_params == coll.search_params and snap.factory == f"{LISTS} ({coll.search_params})"
    steps = approx.ladder(64)
    assert chosen in steps and chosen > 1  # evenly spread codes need more than one list
    assert recall_at(snap, coll, source, chosen) == coll.recall_at_10 >= approx.RECALL_TARGET
    assert recall_at(snap, coll, source, steps[steps.index(chosen) - 1]) < approx.RECALL_TARGET  # the fewest
    assert coll.public()["search_params"] == coll.search_params


def test_a_target_no_probe_count_reaches_stops_where_recall_stops_rising(bank):
    coll, snap, source = built(bank)
    metric = METRICS[coll.metric]
    choice = indexes.IndexChoice(LISTS, "nprobe=1")
    recall, sample, params = approx.tune_probes(snap.index, choice, snap.ids, metric, source, 7, target=1.01)
    chosen = int(params.removeprefix("nprobe="))
    every = {n: approx.Truth.of(source, metric, 7) for n in approx.ladder(64)}
    tried = {}
    for n, truth in every.items():
        indexes.set_search_params(snap.index, f"nprobe={n}", metric)
        tried[n] = truth.found(snap.index, snap.ids, metric, source)
    assert sample == 200 and recall == tried[chosen] >= max(tried.values()) - approx.PLATEAU
    assert all(tried[n] < max(tried.values()) - approx.PLATEAU for n in tried if n < chosen)
    assert chosen <= 64 // approx.MOST_PROBED


def test_the_ladder_doubles_with_steps_between():
    assert approx.ladder(1024) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    assert approx.ladder(4) == [1] and approx.ladder(16) == [1, 2, 3, 4]


def test_a_bank_from_before_the_probes_column_gains_it_when_it_opens(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    Bank.open(tmp_path / "bank").close()
    with sqlite3.connect(tmp_path / "bank" / store.DB_NAME) as db:
        db.execute("ALTER TABLE collections DROP COLUMN search_params")
    reopened = Bank.open(tmp_path / "bank")
    try:
        columns = {row[1] for row in reopened.store.db.execute("PRAGMA table_info(collections)")}
        assert "search_params" in columns
        reopened.create_collection("h", "phash", threshold=4)
        assert reopened.collection("h").search_params is None
    finally:
        reopened.close()


def test_a_hash_collection_searches_with_the_probes_its_build_chose(bank):
    bank.create_collection("h", "phash", threshold=4, index="IVF16,Flat")  # BIVF16 for 64-bit hashes
    hashes = np.random.default_rng(5).integers(0, 256, (2000, 8), dtype=np.uint8)
    bank.add_codes("h", [NewItem(sha256_of(h.tobytes()), f"{i}.jpg", h) for i, h in enumerate(hashes)])
    bank.refresh("h")
    coll = bank.collection("h")
    snap = bank.snapshots.current(coll)
    assert coll.search_params == f"nprobe={snap.index.nprobe}" and snap.index.nprobe in approx.ladder(16)
    reopened = Bank.open(bank.folder)  # another process maps the snapshot and takes its probes from the record
    try:
        assert reopened.snapshots.current(reopened.collection("h")).index.nprobe == snap.index.nprobe
    finally:
        reopened.close()

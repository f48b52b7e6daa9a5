"""Calibrated confidence end to end, on one real small run: calibration.json in the run's folder and the cache,
``bank create --threshold-from OUT --precision-target P`` on that folder, and ``confidence`` served over real HTTP
by ``malle serve``."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from service_server import Server, jpeg, upload

from malle.bank import Bank
from malle.bank.confidence import default_for
from malle.cli import main
from malle.evaluation import calibration, micro_ap
from malle.evaluation.calibration import ConfidenceMap
from malle.ops import get_op
from malle.retrieval.metrics import HAMMING, IP, metric_named

RUN = ["demo", "--n", "8", "--methods", "phash,sscd_distilled", "--precision", "fp32", "--distractors", "12"]
METRICS = {"phash": HAMMING, "sscd_distilled": IP}


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    """(output folder, cache, what the run printed) of one real small run."""
    root = tmp_path_factory.mktemp("calibrated")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*RUN, "--out", str(root / "out"), "--cache", str(root / "cache")]) == 0
    return root / "out", root / "cache", printed.getvalue()


def test_a_run_writes_calibration_json_with_each_methods_map_and_held_back_ece(lab_run):
    out, cache_root, printed = lab_run
    record = json.loads((out / "calibration.json").read_text())
    assert record["preset"] == "reference" and len(record["config_key"]) == 16
    assert set(record["methods"]) == set(METRICS)
    table = pd.read_parquet(out / "predictions.parquet")
    for method, metric in METRICS.items():
        fitted = record["methods"][method]
        assert set(fitted) == {"map", "ece", "reliability", "ece_top1", "reliability_top1", "n_predictions", "folds"}
        rows = table[table["method"] == method]
        again = calibration.calibrate(rows, metric)  # the same predictions give the same calibration
        assert fitted["n_predictions"] == len(rows) and fitted["folds"] == calibration.FOLDS
        assert fitted["ece"] == pytest.approx(again.ece) and 0 <= fitted["ece"] < 1
        assert fitted["map"] == again.map.as_json() and fitted["map"]["metric"] == metric.name
        assert sum(b["count"] for b in fitted["reliability"]) == len(rows)
        assert sum(b["count"] for b in fitted["reliability_top1"]) == rows["query"].nunique()
        assert fitted["ece_top1"] == pytest.approx(again.ece_top1)
        assert f"  {method}: ece {fitted['ece']:.4f}" in printed
    cached = [json.loads(p.read_text()) for p in (cache_root / "calibrate").glob("*/calibration.json")]
    assert sorted(c["n_predictions"] for c in cached) == sorted(f["n_predictions"] for f in record["methods"].values())


def threshold_at(out, method: str, target: float) -> float:
    """The threshold (a similarity) at precision ``target`` and the highest recall, from the run's files."""
    rows = pd.read_parquet(out / "predictions.parquet").query("method == @method")
    positives = int(pd.read_csv(out / "openset.csv").set_index("method").loc[method, "n_positives"])
    curve = micro_ap.precision_recall(rows["is_match"].to_numpy(), rows["score"].to_numpy(), positives)
    return micro_ap.recall_at_precision(curve, target)[1]


def test_bank_create_takes_the_threshold_at_a_precision_target_and_the_runs_map(lab_run, tmp_path, capsys):
    out, cache_root, _ = lab_run
    bank = tmp_path / "bank"
    args = ["--cache", str(cache_root), "--threshold-from", str(out)]
    assert main(["bank", "create", str(bank), "strict", "--method", "sscd_distilled", *args,
                 "--precision-target", "0.95"]) == 0
    assert main(["bank", "create", str(bank), "usual", "--method", "sscd_distilled", *args]) == 0
    printed = capsys.readouterr().out
    assert f"calibrated on sscd_distilled's predictions in {out.resolve()}" in printed
    opened = Bank.open(bank, model_cache=cache_root)
    try:
        strict, usual = opened.collection("strict"), opened.collection("usual")
    finally:
        opened.close()
    assert strict.threshold == pytest.approx(threshold_at(out, "sscd_distilled", 0.95))
    assert "precision 0.95 of sscd_distilled" in strict.threshold_source
    at_p90 = pd.read_csv(out / "openset.csv").set_index("method").loc["sscd_distilled", "threshold_at_p90"]
    assert usual.threshold == pytest.approx(at_p90) == pytest.approx(threshold_at(out, "sscd_distilled", 0.9))
    run_map = json.loads((out / "calibration.json").read_text())["methods"]["sscd_distilled"]["map"]
    assert strict.calibration["map"] == run_map and str(out.resolve()) in strict.calibration["source"]


@pytest.mark.parametrize("extra, words", [
    (["--precision-target", "0.95"], "needs a lab run"),
    (["--precision-target", "1.5"], "at most 1"),
    (["--precision-target", "0.95", "--threshold", "10"], "not both"),
])
def test_a_precision_target_without_a_run_is_one_line(lab_run, tmp_path, capsys, extra, words):
    _, cache_root, _ = lab_run
    assert main(["bank", "create", str(tmp_path / "bank"), "p", "--method", "phash", "--cache", str(cache_root),
                 *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def edited(photo) -> bytes:
    img = get_op("resize").apply(Image.open(photo).convert("RGB"), {"size": 320})
    return jpeg(get_op("color").apply(img, {"brightness": 1.1, "contrast": 1.0}), 75)


def test_confidence_is_served_next_to_the_score(lab_run, tmp_path, demo_photos):
    out, cache_root, _ = lab_run
    bank = Bank.open(tmp_path / "bank", model_cache=cache_root)
    try:
        bank.create_collection("run", "sscd_distilled", threshold_from=out)
        bank.create_collection("none", "dhash", threshold=10)  # no map shipped for dHash: confidence is null
    finally:
        bank.close()
    run_map = ConfidenceMap.from_json(json.loads((out / "calibration.json").read_text())["methods"]["sscd_distilled"]
                                      ["map"], IP)
    server = Server(tmp_path / "bank", cache_root)
    try:
        client = server.client
        for name in ("run", "none"):
            for photo in demo_photos[:6]:
                added = upload(client, f"/v1/collections/{name}/items", photo.read_bytes(), photo.name)
                assert added.status_code == 201, added.text
        found = upload(client, "/v1/collections/run/match?k=6", edited(demo_photos[2])).json()["matches"]
        scores = np.array([m["score"] for m in found])
        assert found[0]["filename"] == demo_photos[2].name
        assert [m["confidence"] for m in found] == pytest.approx(run_map(scores).tolist())
        assert all(0 <= m["confidence"] <= 1 for m in found) and found[0]["confidence"] >= found[-1]["confidence"]
        plain = upload(client, "/v1/collections/none/match?k=3", edited(demo_photos[2])).json()["matches"]
        assert [m["confidence"] for m in plain] == [None] * 3
        described = client.get("/v1/collections/run").json()
        assert str(out.resolve()) in described["calibration"] and client.get("/v1/collections/none").json()[
            "calibration"] is None
        schema = client.get("/openapi.json").json()["components"]["schemas"]["Match"]["properties"]["confidence"]
        assert "probability" in schema["description"]
        pair = {"file_a": ("a.jpg", demo_photos[2].read_bytes()), "file_b": ("b.jpg", edited(demo_photos[2]))}
        compared = {s["method"]: s for s in client.post("/v1/compare?methods=phash,dhash", files=pair).json()["scores"]}
        shipped = ConfidenceMap.from_json(default_for("phash")["map"], HAMMING)
        assert compared["phash"]["confidence"] == pytest.approx(shipped(compared["phash"]["score"])[0])
        assert compared["dhash"]["confidence"] is None
    finally:
        server.stop()
    assert server.internal_errors() == []


def test_a_collection_without_a_run_answers_with_its_methods_shipped_map(tmp_path, monkeypatch, demo_photos):
    shipped = default_for("pdq")
    if shipped is None:
        pytest.skip("no map is shipped for pdq (malle/bank/calibrations.json)")
    monkeypatch.setenv("MALLE_CACHE", str(tmp_path / "cache"))
    bank = Bank.open(tmp_path / "bank")
    try:
        coll = bank.create_collection("p", "pdq")
        assert coll.calibration["source"].startswith("default: calibrated on the reproduction run")
        bank.add_files("p", demo_photos[:4])
        found = bank.match_bytes("p", edited(demo_photos[1]), k=4).matches
        expected = ConfidenceMap.from_json(shipped["map"], HAMMING)([m.score for m in found])
        assert [m.confidence for m in found] == pytest.approx(expected.tolist())
    finally:
        bank.close()


def test_the_shipped_maps_say_where_they_were_measured_and_are_valid():
    from malle.bank import confidence

    if not confidence.DEFAULTS_FILE.is_file():
        pytest.skip("no calibrations.json shipped")
    shipped = json.loads(confidence.DEFAULTS_FILE.read_text())
    assert "imagenet-200x5" in shipped["measured_on"]
    for method, fitted in shipped["methods"].items():
        ConfidenceMap.from_json(fitted["map"], metric_named(fitted["map"]["metric"]))
        assert 0 <= fitted["ece"] < 0.05, method


"""Open-set detection end to end: distractor queries, predictions, µAP per method, the CLI's files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from malle.cli import main
from malle.evaluation import micro_ap as openset
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.ops import AugmentConfig

SMALL = dict(n=12, n_classes=2, augment=AugmentConfig(copies=(1,), chain_lengths=(1, 2)),
             methods=("sscd_distilled", "phash"))


@pytest.fixture(scope="module")
def run(tree_dataset, tmp_path_factory):
    notices: list[str] = []
    exp = Experiment(ExperimentConfig(data=str(tree_dataset), **SMALL), tmp_path_factory.mktemp("open"),
                     log=notices.append)
    return exp.run(), notices


def test_distractors_come_from_distinct_unsampled_images_with_the_copies_chains(run, tree_dataset):
    results, _ = run
    exp = results.experiment
    distractors = exp.distractor_manifest
    assert len(distractors) == len(exp.manifest) == 12  # as many as there are copies: 12 spare photos, one each
    assert (distractors["source"] == "").all() and (distractors["kind"] == "copy").all()
    assert distractors["origin"].is_unique  # DISC21's distractor queries come from distinct photos
    sampled = set(exp.originals["source_path"])
    assert not set(distractors["origin"]) & sampled and set(distractors["origin"]) <= {
        p.relative_to(tree_dataset).as_posix() for p in tree_dataset.rglob("*.JPEG")}
    assert distractors["chain_length"].between(1, 2).all()
    assert all((exp.distractors_dir / f).is_file() for f in distractors["file"])


def test_predictions_and_scores_per_method(run):
    results, _ = run
    predictions = results.predictions()
    assert list(predictions.columns) == ["method", "query", "reference", "rank", "score", "is_match"]
    exp = results.experiment
    for method in results.methods:
        part = predictions[predictions["method"] == method]
        assert part["query"].nunique() == 24 and part.groupby("query").size().eq(10).all()
        assert not part[part["query"].isin(exp.distractor_manifest["file"])]["is_match"].any()
        expected, _ = openset.score(part, n_positives=12)
        row = results.openset().set_index("method").loc[method]
        assert row["uap"] == pytest.approx(expected.uap) and row["n_positives"] == 12 and row["n_queries"] == 24
    hashes = predictions[predictions["method"] == "phash"]["score"]
    assert (hashes <= 0).all()  # negated Hamming distances: higher is more similar
    table = results.openset().set_index("method")
    assert table.loc["sscd_distilled", "uap"] > table.loc["phash", "uap"]
    curves = results.pr_curves()
    assert set(curves["method"]) == set(results.methods) and curves["recall"].between(0, 1).all()


def test_too_many_distractors_uses_what_there_is_and_says_so(tree_dataset, tmp_path):
    notices: list[str] = []
    exp = Experiment(ExperimentConfig(data=str(tree_dataset), **{**SMALL, "methods": ("phash",)}, distractors=500),
                     tmp_path, log=notices.append)
    exp.run()
    manifest = exp.distractor_manifest
    assert len(manifest) == 12 and manifest["origin"].is_unique  # 12 unsampled photos, one query each
    said = [n for n in notices if n.startswith("Only")]
    assert said == ["Only 12 distractor queries could be made: 12 from 12 unsampled images, one each "
                    "(asked for 500); using them all."]


def test_a_dataset_without_unsampled_images_runs_closed_set_with_a_notice(tree_dataset, tmp_path):
    notices: list[str] = []
    results = Experiment(ExperimentConfig(data=str(tree_dataset), **{**SMALL, "n": 24, "methods": ("phash",)}),
                         tmp_path, log=notices.append).run()
    assert not results.has_openset and results.openset().empty
    assert any("Running closed-set" in n for n in notices)
    assert len(results.per_query) > 0


def test_the_cli_writes_the_open_set_files(tree_dataset, tmp_path, capsys):
    code = main(["run", "--data", str(tree_dataset), "--methods", "phash", "--n", "12", "--n-classes", "2",
                 "--copies", "2", "--distractors", "10", "--out", str(tmp_path / "out"),
                 "--cache", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0 and "Open set: 10 distractor queries" in out
    table = pd.read_csv(tmp_path / "out" / "openset.csv")
    assert list(table.columns) == ["method", "uap", "recall_at_p90", "threshold_at_p90", "n_queries", "n_positives"]
    assert len(pd.read_parquet(tmp_path / "out" / "predictions.parquet")) == (24 + 10) * 10
    assert {"threshold", "precision", "recall"} <= set(pd.read_parquet(tmp_path / "out" / "pr_curve.parquet"))
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert (manifest["source"] == "").sum() == 10 and len(manifest) == 34
    assert json.loads((tmp_path / "out" / "config.json").read_text())["distractors"] == 10
    assert main(["run", "--data", str(tree_dataset), "--distractors", "-1", "--cache", str(tmp_path / "c")]) == 2

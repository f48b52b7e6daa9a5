"""Derived methods (``METHOD+norm``, ``+regions``, ``+verify``) as stages of a real run on real photos.

One small experiment (6 originals of the demo photos, SSCD's student, distractor queries and database
distractors) runs every trick end to end; the tests then check what each derived method's outputs must be
against its base method's, the background set's draw, and the names.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from malle.cli import main
from malle.dashboard import frame
from malle.descriptors import resolve_methods
from malle.errors import ConfigError
from malle.evaluation import micro_ap as openset
from malle.io import cache
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.lab.published import tricks_summary
from malle.lab.stages import trick_layers as layers
from malle.ops import AugmentConfig
from malle.tricks.methods import parse
from malle.tricks.normalise import ScoreNormalisation, background_index, background_similarity

BASE = "sscd_distilled"
DERIVED = (f"{BASE}+norm", f"{BASE}+regions", f"{BASE}+verify", f"{BASE}+verify+norm")


def small(data, root, **config) -> Experiment:
    fields = dict(n=6, n_classes=0, seed=0, methods=(BASE, *DERIVED), distractors=4, db_distractors=3,
                  augment=AugmentConfig(copies=(2,), chain_lengths=(1, 2)))
    return Experiment(ExperimentConfig(data=str(data), **{**fields, **config}), root)


@pytest.fixture(scope="module")
def tricks_run(tree_dataset, tmp_path_factory):
    exp = small(tree_dataset, tmp_path_factory.mktemp("cache"))
    results = exp.run()
    out = tmp_path_factory.mktemp("out")
    return results, results.write(out), out


def per_query(results, method: str) -> pd.DataFrame:
    return results.per_query[results.per_query["method"] == method].reset_index(drop=True)


def test_every_derived_method_runs_end_to_end_and_sits_next_to_its_base(tricks_run):
    results, written, out = tricks_run
    assert results.methods == [BASE, *DERIVED]
    assert set(results.recall()["method"]) == set(results.methods)
    assert set(results.openset()["method"]) == set(results.methods)
    costs = results.costs().set_index("method")
    assert costs.loc[f"{BASE}+verify", "tricks_ms_per_query"] > 0 and costs.loc[BASE, "tricks_ms_per_query"] == 0
    assert (costs.loc[list(DERIVED), "ms_per_query"] > costs.loc[BASE, "ms_per_query"]).all()
    assert results.labels[f"{BASE}+verify+norm"] == (results.labels[BASE] + " + SIFT verification"
                                                     " + score normalisation")
    gains = pd.read_csv(out / "tricks.csv").set_index("method")
    assert list(gains.index) == list(DERIVED)
    uap = results.openset().set_index("method")["uap"]
    for method in DERIVED:
        assert gains.loc[method, "uap_gain"] == pytest.approx(uap[method] - uap[BASE])
    assert len(per_query(results, f"{BASE}+regions")) == len(results.experiment.manifest)


def test_norm_keeps_recall_shifts_scores_by_the_background_and_its_uap_is_isc2021s(tricks_run):
    results, _, _ = tricks_run
    exp = results.experiment
    base, norm = per_query(results, BASE), per_query(results, f"{BASE}+norm")
    pd.testing.assert_series_equal(base["rank"], norm["rank"])
    recall = results.recall().set_index(["method", "level", "k"])["recall"]
    assert recall.loc[f"{BASE}+norm"].tolist() == recall.loc[BASE].tolist()
    # By hand: each copy's scores less its code's mean background similarity at ranks 1-3.
    background = cache.read_npy(exp.stage("background", BASE).folder / "codes.npy")
    sscd = ScoreNormalisation(beta=1.0, first=1, last=3)  # SSCD's --score_norm 1.0[0,2], the default
    assert exp.normalisation == sscd
    shift = background_similarity(exp.codes(BASE)[1], background_index(background), sscd)
    expected = (base["top1_score"] - shift).to_numpy()
    np.testing.assert_allclose(norm["top1_score"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    predictions = results.predictions([f"{BASE}+norm"])
    recomputed, _ = openset.score(predictions, n_positives=len(exp.manifest))
    assert results.openset().set_index("method").loc[f"{BASE}+norm", "uap"] == recomputed.uap


def test_verify_reorders_only_the_top_and_keeps_ranks_below_it(tricks_run):
    results, _, _ = tricks_run
    base, verified = per_query(results, BASE), per_query(results, f"{BASE}+verify")
    deep = base["rank"].astype("Float64").fillna(np.inf) > layers.VERIFY_TOP
    pd.testing.assert_series_equal(base.loc[deep, "rank"], verified.loc[deep, "rank"])
    found = ~deep
    assert (verified.loc[found, "rank"].astype("Float64") <= layers.VERIFY_TOP).all()


def test_composed_tricks_build_on_their_parent(tricks_run):
    results, _, _ = tricks_run
    verified, both = per_query(results, f"{BASE}+verify"), per_query(results, f"{BASE}+verify+norm")
    pd.testing.assert_series_equal(verified["rank"], both["rank"])
    assert (both["top1_score"] < verified["top1_score"]).all(), "normalising subtracts a positive similarity"


def test_background_set_is_disjoint_from_originals_distractor_sources_and_database(tricks_run):
    results, _, out = tricks_run
    exp = results.experiment
    held = {c.rel for c in exp.background_images}
    assert held
    assert not held & set(exp.originals["source_path"])
    assert not held & set(exp.distractor_manifest["origin"])
    assert not held & {c.rel for c in exp.db_distractor_images}
    assert not held & {c.rel for c in exp.donor_images}
    recorded = cache.read_json(out / "config.json")["score_normalisation"]
    assert recorded["beta"] == 1.0 and recorded["ranks"] == [1, 3]
    assert recorded["background"]["size"] == len(held) and recorded["background"]["source"] == "dataset"


def test_another_score_norm_setting_shifts_by_its_own_ranks_and_is_recorded(tricks_run, tree_dataset, tmp_path):
    results, _, _ = tricks_run
    base_exp = results.experiment
    # SSCD's syntax: beta 2 over zero-based background neighbours 0..4, i.e. ranks 1-5.
    exp = small(tree_dataset, base_exp.root, methods=(BASE, f"{BASE}+norm"), score_norm="2.0[0,4]")
    assert exp.config.score_norm == "2[0,4]" and exp.normalisation == ScoreNormalisation(2.0, 1, 5)
    # The background set and the base method are shared; only the normalised stages are new.
    assert exp.stage("background", BASE).folder == base_exp.stage("background", BASE).folder
    assert exp.stage("search", f"{BASE}+norm").folder != base_exp.stage("search", f"{BASE}+norm").folder
    background = cache.read_npy(exp.stage("background", BASE).folder / "codes.npy")
    sims = np.sort(exp.codes(BASE)[1] @ background.T, axis=1)[:, ::-1]
    expected = exp.neighbours(BASE)[1][:, 0] - 2.0 * sims[:, :5].mean(axis=1)
    normed = cache.read_table(exp.stage("search", f"{BASE}+norm").folder / "per_query.parquet")
    np.testing.assert_allclose(normed["top1_score"].to_numpy(), expected, rtol=1e-5, atol=1e-5)
    out = tmp_path / "out"
    exp.run().write(out)
    recorded = cache.read_json(out / "config.json")
    assert recorded["score_norm"] == "2[0,4]" and recorded["score_normalisation"]["ranks"] == [1, 5]


@pytest.mark.parametrize("value, message", [("2", "expected BETA[FIRST,LAST]"), ("1.0[3,1]", "first <= last")])
def test_a_bad_score_norm_is_one_line(value, message, capsys):
    assert main(["demo", "--score-norm", value]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]


def test_a_run_without_norm_draws_no_background_and_keeps_its_config(tree_dataset, tmp_path):
    exp = small(tree_dataset, tmp_path, methods=(BASE, f"{BASE}+verify"))
    assert exp.background_images == []


def test_background_folder_overrides_and_too_small_a_set_is_one_line(tree_dataset, tmp_path, demo_photos):
    folder = tmp_path / "background"
    folder.mkdir()
    for photo in demo_photos[-2:]:
        shutil.copyfile(photo, folder / photo.name)
    exp = small(tree_dataset, tmp_path / "cache", methods=(f"{BASE}+norm",), background=str(folder))
    assert [c.path.name for c in exp.background_images] == [p.name for p in demo_photos[-2:]]
    with pytest.raises(ConfigError, match=r"at least 3 images.*--background") as err:
        exp.stage("background", BASE)
    assert "\n" not in str(err.value)


def test_suffixes_compose_and_canonicalise():
    assert parse(f"{BASE}+norm+regions+verify").name == f"{BASE}+regions+verify+norm"
    assert parse(f"{BASE}+norm").parent.name == BASE
    assert parse(f"{BASE}+norm+regions").parent.name == f"{BASE}+regions"
    methods, _ = resolve_methods([f"{BASE}+norm+verify", f"{BASE}+verify+norm", BASE])
    assert methods == [f"{BASE}+verify+norm", BASE]


@pytest.mark.parametrize("name, message", [
    ("phash+norm", "need a float (cosine) descriptor"),
    (f"{BASE}+sharpen", "unknown suffix(es) 'sharpen'"),
    (f"{BASE}+norm+norm", "is repeated"),
    ("+norm", "no method before the suffix"),
])
def test_bad_suffixes_are_one_line_errors(name, message, capsys):
    with pytest.raises(ConfigError) as err:
        resolve_methods([name])
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--methods", name])
    assert stop.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(error) == 1 and message in error[0]


def test_severity_refuses_a_derived_method_in_one_line(tree_dataset, tmp_path, capsys):
    assert main(["severity", "--data", str(tree_dataset), "--methods", f"{BASE}+norm", "--n", "2", "--ops", "blur",
                 "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "not measured in severity sweeps; use its base method sscd_distilled" in error[0]


def test_one_new_image_is_never_answered_by_a_trick_under_its_name(tmp_path):
    exp = Experiment(ExperimentConfig(n=4, methods=("phash", "sscd_distilled+norm")), tmp_path)
    with pytest.raises(ConfigError, match="query sscd_distilled instead"):
        exp.query("sscd_distilled+norm", [Image.new("RGB", (64, 64))])
    offered, _ = frame.method_options()
    assert "sscd_distilled+norm" in offered and "sscd_distilled+verify" in offered
    assert not any(m.startswith(("phash+", "pdq+")) for m in offered)  # tricks need a float descriptor


def test_printed_gains_have_no_negative_zero():
    gains = pd.DataFrame({"method": ["m+regions"], "recall_at_1": [1.0], "recall_at_1_gain": [0.0],
                          "uap": [0.99996], "uap_gain": [-1.7e-5], "recall_at_p90": [1.0],
                          "recall_at_p90_gain": [-0.02], "tricks_ms_per_query": [29.0]})
    printed = tricks_summary(gains).to_string(float_format="{:.4f}".format)
    assert "-0.0000" not in printed and "-0.0200" in printed

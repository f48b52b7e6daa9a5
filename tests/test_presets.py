"""Presets (malle.ops.presets): each runs end to end on the demo photos; hard is DISC21-like with composites;
reference is the config from before presets; explicit --ops and --chain-lengths override a preset's."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from malle.cli import main
from malle.cli.options import add_experiment_options, config_from_args
from malle.dashboard.frame import augment_for
from malle.errors import ConfigError
from malle.ops import COMPOSITE_OPS, OPS, PRESETS, REFERENCE_OPS, AugmentConfig, get_preset, sample_chain

COMPOSITES = {op.name for op in COMPOSITE_OPS}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_experiment_options(parser, 6)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_end_to_end_on_the_demo_photos(name, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["demo", "--preset", name, "--n", "6", "--methods", "phash", "--distractors", "12",
                 "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    distractors = manifest[manifest["source"] == ""]
    negatives = distractors[distractors["kind"] != "copy"]
    assert len(distractors) == 12 and distractors[distractors["kind"] == "copy"]["origin"].is_unique
    assert len(negatives) == PRESETS[name].hard_negatives(12) == (3 if name == "hard" else 0)
    manifest = manifest[manifest["ops"] != ""]  # hard negatives are derived from no image: they have no chain
    ops = [op for chain in manifest["ops"] for op in chain.split("|")]
    assert set(ops) <= set(PRESETS[name].ops)
    if name == "reference":
        assert "preset" not in config["augment"]  # the config from before presets, so keys and goldens stay
        assert not COMPOSITES & set(ops)
    else:
        assert config["augment"]["preset"] == name
        assert config["augment"]["single_share"] == PRESETS[name].single_share


def test_a_hard_run_has_at_least_three_composite_edits_with_donor_photos(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--preset", "hard", "--n", "6", "--methods", "phash", "--distractors", "0",
                 "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    manifest = pd.read_csv(out / "manifest.csv")
    steps = [step for chain in manifest["chain"] for step in json.loads(chain)]
    composites = [step for step in steps if step["op"] in COMPOSITES]
    assert len(composites) >= 3
    assert {"left", "top", "right", "bottom", "donor"} <= set(composites[0]["params"])
    pasted = [step["params"]["donor"] for step in composites if step["op"] in ("inset", "overlay", "collage")]
    assert any(pasted)  # the demo has spare photos, so donors are real pictures, recorded by their paths


def test_hard_is_every_op_in_long_chains_with_a_share_of_single_edits():
    hard = get_preset("hard")
    assert set(hard.ops) == set(OPS) and COMPOSITES <= set(hard.ops)
    config = hard.augment()
    rng = np.random.default_rng(0)
    lengths = [len(sample_chain(rng, (400, 300), config.ops, config.chain_lengths, single_share=config.single_share))
               for _ in range(2000)]
    single = np.mean(np.array(lengths) == 1)
    assert abs(single - hard.single_share) < 0.04
    assert min(length for length in lengths if length > 1) >= hard.chain_lengths[0]
    assert max(lengths) <= hard.chain_lengths[1]


def test_reference_preset_is_todays_default():
    assert get_preset("reference").augment() == AugmentConfig()
    assert config_from_args(parse()).augment == AugmentConfig()
    assert config_from_args(parse("--preset", "reference")).augment.as_dict() == AugmentConfig().as_dict()
    assert augment_for("reference") == AugmentConfig()  # the dashboard's sidebar default


def test_explicit_ops_and_chain_lengths_override_the_preset():
    config = config_from_args(parse("--preset", "hard", "--ops", "blur,inset", "--chain-lengths", "2")).augment
    assert config.ops == ("blur", "inset") and config.chain_lengths == (2, 2) and config.preset == "hard"
    assert config_from_args(parse("--preset", "hard")).augment.ops == tuple(OPS)
    assert config_from_args(parse("--ops", "inset")).augment.ops == ("inset",)


def test_single_share_zero_draws_what_chains_always_drew():
    a = sample_chain(np.random.default_rng(5), (400, 300), REFERENCE_OPS, (1, 5))
    b = sample_chain(np.random.default_rng(5), (400, 300), REFERENCE_OPS, (1, 5), single_share=0.0)
    assert a == b


def test_bad_presets_and_shares_are_one_line_errors(capsys):
    with pytest.raises(ConfigError, match="unknown preset 'easy'"):
        get_preset("easy")
    with pytest.raises(ConfigError, match="share of single edits"):
        AugmentConfig(single_share=1.0)
    with pytest.raises(SystemExit):
        parse("--preset", "easy")
    assert "invalid choice: 'easy'" in capsys.readouterr().err

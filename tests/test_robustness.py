"""The robustness lab on real photos: the extra edits, severity sweeps with breaking points, attribution of misses."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from malle.cli import main
from malle.descriptors import create_descriptor
from malle.evaluation.leave_one_out import COMBINATION, charged_ops, summarise
from malle.io.images import encode_jpeg, load_rgb
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.lab.stages import Node
from malle.ops import (
    COMPOSITE_OPS,
    EXTRA_OPS,
    OPS,
    REFERENCE_OPS,
    AugmentConfig,
    Step,
    apply_chain,
    chain_from_json,
    chain_to_json,
    get_preset,
    sample_params,
)
from malle.ops.severity import GRIDS, MIN_RECALL, breaking_points, placement_rng


@pytest.fixture(scope="module")
def photo(demo_photos):
    return load_rgb(demo_photos[3])


# -- the extra edits ----------------------------------------------------------------------------------
def test_the_extra_edits_are_registered_but_the_reproduction_keeps_the_reference_ten():
    assert len(REFERENCE_OPS) == 10 and AugmentConfig().ops == REFERENCE_OPS
    composites = {op.name for op in COMPOSITE_OPS}  # the third family (tests/test_composites.py)
    assert {op.name for op in EXTRA_OPS} == set(OPS) - set(REFERENCE_OPS) - composites
    assert {"hflip", "rotatequarter", "pad", "text", "sticker", "grayscale", "noise", "pixelate", "perspective",
            "screenshot"} == {op.name for op in EXTRA_OPS}


@pytest.mark.parametrize("op", [op.name for op in EXTRA_OPS])
def test_each_extra_edit_changes_the_image_replays_exactly_and_predicts_its_size(op, photo):
    rng = np.random.default_rng(3)
    chain = sample_params(rng, [op], photo.size)
    out = apply_chain(photo, chain)
    assert out.mode == "RGB" and out.size == OPS[op].output_size(photo.size, chain[0].params)
    assert not np.array_equal(np.asarray(out), np.asarray(photo)) or out.size != photo.size
    again = apply_chain(photo, chain_from_json(chain_to_json(chain)))
    assert np.array_equal(np.asarray(out), np.asarray(again))  # replayable from the manifest's JSON
    encode_jpeg(out)


def test_flip_and_grayscale_do_what_they_say(photo):
    flipped = np.asarray(OPS["hflip"].apply(photo, {}))
    assert np.array_equal(flipped, np.asarray(photo)[:, ::-1])
    gray = np.asarray(OPS["grayscale"].apply(photo, {}))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    turned = OPS["rotatequarter"].apply(photo.crop((0, 0, 300, 200)), {"turns": 1})
    assert turned.size == (200, 300)


# -- severity sweeps ----------------------------------------------------------------------------------
def test_every_op_has_a_grid_from_the_untouched_original_upwards():
    assert set(GRIDS) == set(OPS)
    for grid in GRIDS.values():
        assert 2 <= len(grid.values) <= 8 and len(set(grid.values)) == len(grid.values)
    assert GRIDS["rotate"].values[-1] == 45 and GRIDS["jpeg"].values[-1] == 5 and GRIDS["blur"].values[-1] == 8
    assert GRIDS["centercrop"].values[-1] ** 2 < 0.1  # the strongest crop keeps under 10 % of a square's area


def test_placement_is_per_original_so_only_the_strength_changes(photo):
    grid = GRIDS["occlude"]
    small = grid.params(0.05, photo.size, placement_rng(0, "a.JPEG", "occlude"))
    large = grid.params(0.4, photo.size, placement_rng(0, "a.JPEG", "occlude"))
    assert (small["x"], small["y"]) == (large["x"], large["y"]) and small["size"] < large["size"]
    other = grid.params(0.05, photo.size, placement_rng(0, "b.JPEG", "occlude"))
    assert (other["x"], other["y"]) != (small["x"], small["y"])


@pytest.fixture(scope="module")
def sweep(tree_dataset, tmp_path_factory):
    exp = Experiment(ExperimentConfig(data=str(tree_dataset), n=24, n_classes=8, methods=("sscd_distilled", "phash")),
                     tmp_path_factory.mktemp("sweep"))
    return exp, exp.severity(["randomcrop", "resize", "hflip"])


def test_at_level_zero_every_method_finds_every_original(sweep):
    _, table = sweep
    assert (table[table["level"] == 0]["recall_at_1"] == 1.0).all()
    assert list(table.columns) == ["method", "op", "level", "param", "recall_at_1", "recall_at_10", "n"]


def test_phash_degrades_monotonically_under_crops_and_sscd_stays_above_it(sweep):
    _, table = sweep
    crops = table[table["op"] == "randomcrop"].pivot(index="level", columns="method", values="recall_at_1")
    one_query = 1 / 24
    assert (np.diff(crops["phash"].to_numpy()) <= one_query + 1e-9).all(), crops
    strongest = crops.index.max()
    assert crops.loc[strongest, "sscd_distilled"] > crops.loc[strongest, "phash"]


def test_breaking_points_name_the_first_level_below_the_bar(sweep):
    _, table = sweep
    broken = breaking_points(table).set_index(["method", "op"])
    phash = table[(table["method"] == "phash") & (table["op"] == "hflip")]
    assert phash[phash["level"] == 1]["recall_at_1"].iloc[0] < MIN_RECALL
    assert broken.loc[("phash", "hflip"), "level"] == 1 and broken.loc[("phash", "hflip"), "param"] == "flipped=1"


def test_a_level_that_leaves_an_unusable_image_is_skipped_not_fatal(tree_dataset, tmp_path):
    exp = Experiment(ExperimentConfig(data=str(tree_dataset), n=2, n_classes=0, methods=("phash",)), tmp_path)
    stage = exp.stage("sweep", "resize", 6)  # scale 0.1 of a 512 px photo: 51 px, still usable
    assert stage.meta["items"] == 2
    tiny = Image.new("RGB", (60, 60), "white")
    with pytest.raises(Exception, match="too small"):
        GRIDS["resize"].make(tiny, 0.1, placement_rng(0, "t", "resize"))


def test_the_severity_command_writes_both_tables(tree_dataset, tmp_path, capsys):
    code = main(["severity", "--data", str(tree_dataset), "--n", "6", "--n-classes", "2", "--ops", "rotate,jpeg",
                 "--methods", "phash", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0 and "Breaking points" in out
    table = pd.read_csv(tmp_path / "out" / "severity.csv")
    assert len(table) == 14 and set(table["param"]) >= {"angle=45", "quality=5"}
    assert list(pd.read_csv(tmp_path / "out" / "breaking_points.csv").columns) == \
        ["method", "op", "level", "param", "recall_at_1"]


# -- attribution -------------------------------------------------------------------------------------
def test_a_strong_crop_with_a_mild_jpeg_missed_by_phash_charges_the_crop(demo_photos):
    desc = create_descriptor("phash")
    originals = [load_rgb(p) for p in demo_photos[:30]]
    from malle.retrieval.metrics import HAMMING
    index = HAMMING.build_index(desc.encode(originals))
    charged = []
    for source, original in enumerate(originals[:12]):
        chain = [Step("randomcrop", {"size": 256, "x": 0.95, "y": 0.95}), Step("jpeg", {"quality": 70})]
        copy = load_rgb(encode_jpeg(apply_chain(original, chain), 95))
        from malle.retrieval.topk import search
        if search(index, desc.encode([copy]), 1, HAMMING).ids[0, 0] != source:  # a miss
            charged.append(charged_ops(desc, index, original, chain, source))
    assert len(charged) >= 3, "pHash should miss most of these crops"
    assert all(ops == ["randomcrop"] for ops in charged), charged


def test_attribution_shares_and_the_combination():
    per_query = pd.DataFrame({"query": ["a", "b", "c"], "ops": ["x|y", "x|y", "x|z"],
                              "charged": ["x", "x|y", COMBINATION]})
    table = summarise("m", per_query).set_index("op")
    assert table.loc["x", "misses_charged"] == 1.5 and table.loc["y", "misses_charged"] == 0.5
    assert table.loc[COMBINATION, "misses_charged"] == 1.0
    assert table["share"].sum() == pytest.approx(1.0)


def test_a_run_writes_attribution(tree_dataset, tmp_path):
    exp = Experiment(ExperimentConfig(data=str(tree_dataset), n=12, n_classes=2, methods=("phash",),
                                      augment=AugmentConfig(copies=(4,), chain_lengths=(2, 3))), tmp_path)
    results = exp.run()
    charged = results.charged("phash")
    misses = results.per_query[(results.per_query["rank"].astype("Float64").fillna(99) > 1)]
    assert len(charged) == len(misses) and set(charged["query"]) == set(misses["query"])
    results.write(tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "attribution.csv")
    assert list(table.columns) == ["method", "op", "misses_charged", "share"]
    assert table["misses_charged"].sum() == pytest.approx(len(charged))


# -- the sweep's work: what it computes once, and what a changed setting recomputes -----------------------------
def test_a_sweep_encodes_each_op_once_and_reads_level_zero_from_the_embed_stage(sweep):
    exp, table = sweep
    for op in ("randomcrop", "resize", "hflip"):
        levels = len(GRIDS[op].values)
        assert not exp.is_cached("sweep", op, 0)  # level 0 is the originals the embed stage encoded
        for method in ("sscd_distilled", "phash"):
            codes = exp.stage("sweepcodes", method, op)
            assert codes.meta["levels"] == list(range(1, levels))
            for level in range(1, levels):
                stored = np.load(codes.folder / f"level_{level}.npy")
                files = pd.read_parquet(exp.folder("sweep", op, level) / "manifest.parquet")["file"]
                assert len(stored) == len(files)
    # One pass over a level's images gives the codes a pass over that level alone gives.
    desc = exp.descriptor("sscd_distilled")
    level = exp.folder("sweep", "resize", 3)
    alone = desc.encode_files([level / "images" / f for f in exp.originals["file"]], queries=True)
    np.testing.assert_allclose(np.load(exp.folder("sweepcodes", "sscd_distilled", "resize") / "level_3.npy"), alone,
                               rtol=0, atol=1e-5)
    untouched = exp.stage("sweepscore", "phash", "resize", 0).meta
    assert untouched["n"] == len(exp.originals) and untouched["param"] == "scale=1"


def test_a_method_with_query_variants_encodes_level_zero_as_queries(tree_dataset, tmp_path):
    exp = Experiment(ExperimentConfig(data=str(tree_dataset), n=4, n_classes=0, methods=("pdq_dihedral",)), tmp_path)
    table = exp.severity(["hflip"])
    codes = exp.stage("sweepcodes", "pdq_dihedral", "hflip")
    assert codes.meta["levels"] == [0, 1] and np.load(codes.folder / "level_0.npy").shape[1] == 8
    assert (table["recall_at_1"] == 1.0).all()  # a dihedral query finds a flipped original


def test_sweep_images_made_by_the_workers_are_one_processs_bytes(tree_dataset, tmp_path, monkeypatch):
    config = ExperimentConfig(data=str(tree_dataset), n=6, n_classes=0, methods=("phash",))
    made = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("MALLE_WORKERS", workers)
        stage = Experiment(config, tmp_path / workers).stage("sweep", "rotate", 4)
        made[workers] = {p.name: p.read_bytes() for p in sorted((stage.folder / "images").iterdir())}
    assert made["1"] == made["2"] and len(made["1"]) == 6


def folders(exp: Experiment, nodes) -> dict:
    return {node: exp.folder(node.kind, *node.args) for node in nodes}


def test_a_changed_setting_recomputes_only_the_stages_whose_keys_it_changes(tree_dataset, tmp_path):
    """The keys alone (nothing is built): the dashboard's sidebar changes recompute only dependent stages."""
    base = ExperimentConfig(data=str(tree_dataset), n=6, n_classes=0, methods=("phash", "sscd_distilled"))
    exp = Experiment(base, tmp_path)
    nodes = exp.run_nodes(open_set=False) + exp.severity_nodes(["jpeg"]) + [
        Node("sweepcodes", (m, "jpeg")) for m in exp.methods] + [Node("sweep", ("jpeg", 1))]

    def changed(**fields) -> set[str]:
        other = Experiment(replace(base, **fields), tmp_path)
        before, after = folders(exp, nodes), folders(other, nodes)
        return {str(node) for node in nodes if before[node] != after[node]}

    chains = changed(augment=get_preset("hard").augment())
    assert chains == {"copies", *(f"{kind}[{m}]" for kind in ("embed", "search", "attribution") for m in exp.methods),
                      *(str(n) for n in exp.severity_nodes(["jpeg"]))}  # sweepscore searches the new index only
    assert not {n for n in chains if n.startswith(("sweep[", "sweepcodes["))}, "the sweep's images and codes stay"
    assert changed(seed=1) >= {"samples", "copies", "sweep[jpeg:1]"}
    fewer = Experiment(replace(base, methods=("phash",)), tmp_path)
    kept = [n for n in nodes if not n.args or n.args[0] != "sscd_distilled"]
    assert folders(fewer, kept) == folders(exp, kept)  # dropping a method recomputes nothing of the others

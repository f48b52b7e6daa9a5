"""The cached engine end to end, on real photos."""

import numpy as np
import pandas as pd
from conftest import GOOD_IN_BAD_FOLDER

from malle.dashboard import shared
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.ops import AugmentConfig

SMALL = dict(n=12, n_classes=2, augment=AugmentConfig(copies=(2,), chain_lengths=(1, 3)))


def test_second_run_reuses_every_stage(tree_dataset, tmp_path):
    config = ExperimentConfig(data=str(tree_dataset), methods=("phash",), **SMALL)
    first = Experiment(config, tmp_path).run()
    assert not first.timings()["cached"].any()
    second = Experiment(config, tmp_path).run()
    assert second.timings()["cached"].all()
    pd.testing.assert_frame_equal(first.per_query, second.per_query)
    assert len(first.per_query) == 24 and first.per_query["rank"].notna().all()


def test_adding_a_method_computes_only_that_method(tree_dataset, tmp_path):
    Experiment(ExperimentConfig(data=str(tree_dataset), methods=("phash",), **SMALL), tmp_path).run()
    both = Experiment(ExperimentConfig(data=str(tree_dataset), methods=("phash", "dhash"), **SMALL), tmp_path).run()
    cached = both.timings().set_index(["stage", "method"])["cached"]
    assert cached["samples", ""] and cached["copies", ""] and cached["embed", "phash"]
    assert not cached["embed", "dhash"] and not cached["search", "dhash"]


def test_new_seed_recomputes_from_the_sample(tree_dataset, tmp_path):
    Experiment(ExperimentConfig(data=str(tree_dataset), methods=("phash",), seed=0, **SMALL), tmp_path).run()
    other = Experiment(ExperimentConfig(data=str(tree_dataset), methods=("phash",), seed=1, **SMALL), tmp_path).run()
    assert not other.timings()["cached"].any()


def test_fewer_usable_images_than_n_uses_them_all(bad_folder, tmp_path):
    notices = []
    exp = Experiment(ExperimentConfig(data=str(bad_folder[0]), n=200, methods=("phash",)), tmp_path,
                     log=notices.append)
    results = exp.run()
    assert len(exp.originals) == GOOD_IN_BAD_FOLDER
    assert any(f"only {GOOD_IN_BAD_FOLDER} usable images" in n for n in notices)
    assert set(results.per_query["source"]) == set(exp.originals["file"])


def test_cnn_beats_phash_on_strong_crops(tree_dataset, tmp_path):
    """The real pretrained EfficientNet-Lite2 must find heavily cropped originals far better than pHash."""
    crops = AugmentConfig(copies=(4,), chain_lengths=(1, 1), ops=("randomcrop", "centercrop"))
    config = ExperimentConfig(data=str(tree_dataset), n=24, n_classes=8, augment=crops,
                              methods=("efficientnet_lite2", "phash"))
    results = Experiment(config, tmp_path).run()
    r1 = results.recall().query("level == 'instance' and k == 1").set_index("method")["recall"]
    assert r1["efficientnet_lite2"] >= 0.8
    assert r1["efficientnet_lite2"] >= r1["phash"] + 0.3
    assert results.labels["efficientnet_lite2"].startswith("EfficientNet-Lite2")


def test_neighbour_thumbnails_cover_the_whole_database(tree_dataset, tmp_path):
    """Neighbour ids count the extra references after the originals; a thumbnail shows the item the id names."""
    config = ExperimentConfig(data=str(tree_dataset), methods=("phash",), db_distractors=6, distractors=0, **SMALL)
    exp = Experiment(config, tmp_path)
    exp.run()
    ids, scores = exp.neighbours("phash")
    database = exp.database("phash")["file"]
    assert len(database) == 18 and ids.max() >= len(exp.originals)
    row = int(np.flatnonzero((ids >= len(exp.originals)).any(axis=1))[0])
    thumbs = shared.neighbour_thumbs(exp, "phash", ids[row], scores[row], exp.manifest["source"].iloc[row])
    assert len(thumbs) == len(ids[row])
    for thumb, item in zip(thumbs, ids[row]):
        assert f" {database.iloc[item]} · " in thumb.caption and thumb.path.is_file()
        if item >= len(exp.originals):  # a database distractor: its own photo from the dataset
            assert thumb.path == tree_dataset / database.iloc[item].removeprefix("db:")

"""Hard negatives (malle.data.hard_negatives): every kind made, deterministic from the run seed, photos passed
over with a reason; the hard preset mixes its share in, the reference preset none; the stage says how many it
could make when the spare photos run out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from malle.data.distractor_queries import DISTRACTOR_COLUMNS, origins
from malle.data.hard_negatives import KINDS, kind_counts, make_hard_negatives, negative_name
from malle.data.sampling import Candidate
from malle.io import cache
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.ops import get_preset, parse_copy_filename


@pytest.fixture(scope="module")
def pool(demo_photos) -> list[Candidate]:
    return [Candidate(p, "demo", p.name) for p in demo_photos[:12]]


def made(count: int, pool: list[Candidate], out: Path, seed: int) -> tuple[pd.DataFrame, dict[str, str]]:
    rows, skipped = make_hard_negatives(count, pool, out, seed)
    assert skipped == []
    return pd.DataFrame(rows, columns=DISTRACTOR_COLUMNS), {p.name: cache.file_digest(p) for p in out.iterdir()}


def test_every_kind_is_made_in_turn_with_its_photos_recorded(pool, tmp_path):
    manifest, files = made(2 * len(KINDS) + 1, pool, tmp_path, seed=0)
    assert manifest["kind"].tolist() == [k.name for k in KINDS] * 2 + [KINDS[0].name]
    assert sorted(files) == sorted(manifest["file"])
    assert (manifest["source"] == "").all() and (manifest["chain"] == "[]").all()
    rels = {c.rel for c in pool}
    for row in manifest.itertuples():
        kind = next(k for k in KINDS if k.name == row.kind)
        taken = row.origin.split("|") if row.origin else []
        assert bool(taken) == kind.needs_photos and set(taken) <= rels
        with Image.open(tmp_path / row.file) as img:
            if row.kind == "tiny":
                assert max(img.size) <= 64
            if row.kind == "montage":
                assert len(taken) in (4, 9)
            if row.kind == "uniform":
                assert np.asarray(img, np.float64).std(axis=(0, 1)).max() < 12  # one colour, at most faint noise


def test_hard_negatives_are_the_same_bytes_twice_and_differ_with_the_seed(pool, tmp_path):
    count = len(KINDS)
    first, files = made(count, pool, tmp_path / "a", seed=0)
    again, files_again = made(count, pool, tmp_path / "b", seed=0)
    pd.testing.assert_frame_equal(first, again)
    assert files == files_again
    other, files_other = made(count, pool, tmp_path / "c", seed=1)
    assert sorted(files_other) == sorted(files)  # the same names: kind and index
    assert all(files_other[name] != files[name] for name in files)


def test_a_photo_that_cannot_be_read_passes_its_negative_over(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    rows, skipped = make_hard_negatives(len(KINDS), [Candidate(bad, "x", "bad.jpg")], tmp_path / "out", seed=0)
    photo_kinds = [k.name for k in KINDS if k.needs_photos]
    assert [r["kind"] for r in rows] == [k.name for k in KINDS if not k.needs_photos]
    assert [s["path"] for s in skipped] == ["bad.jpg"] * len(photo_kinds)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(r["file"] for r in rows)


def test_negative_names_are_never_copy_names():
    for kind in KINDS:
        with pytest.raises(ValueError):
            parse_copy_filename(negative_name(kind, 3))


def test_origins_split_the_photos_of_a_montage():
    manifest = pd.DataFrame({"origin": ["a/1.jpg", "", "b/2.jpg|c/3.jpg|a/1.jpg"]})
    assert origins(manifest) == {"a/1.jpg", "b/2.jpg", "c/3.jpg"}


def test_the_shares_of_the_presets():
    hard, reference = get_preset("hard"), get_preset("reference")
    assert hard.hard_negative_share == 0.25 and reference.hard_negative_share == 0
    assert [hard.hard_negatives(k) for k in (0, 1, 2, 36, 40, 500)] == [0, 0, 1, 9, 10, 125]
    assert reference.hard_negatives(500) == 0


def cheap_hard(data: Path, root: Path, distractors: int, log) -> Experiment:
    """The hard preset's name (and so its share of hard negatives) with short chains of one cheap op."""
    augment = get_preset("hard").augment(copies=(1,), ops=("blur",), chain_lengths=(1, 1))
    return Experiment(ExperimentConfig(data=str(data), n=8, n_classes=2, methods=("phash",), augment=augment,
                                       distractors=distractors), root, log=log)


def test_the_hard_preset_mixes_its_share_in_and_says_how_many_when_the_photos_run_out(tree_dataset, tmp_path):
    notices: list[str] = []
    exp = cheap_hard(tree_dataset, tmp_path, 36, notices.append)  # 27 copies wanted; 16 spare photos
    manifest = exp.distractor_manifest
    copies = manifest[manifest["kind"] == "copy"]
    assert len(copies) == 16 and copies["origin"].is_unique  # every spare photo once, then they ran out
    assert kind_counts(manifest) == {kind.name: 1 for kind in KINDS}  # 9 of 36: a quarter, one of each kind
    assert [n for n in notices if n.startswith("Only")] == [
        "Only 25 distractor queries could be made: 16 from 16 unsampled images, one each, and 9 hard negatives "
        "(asked for 36); using them all."]
    assert not origins(manifest) & set(exp.originals["source_path"])


def test_the_reference_preset_makes_no_hard_negatives(tree_dataset, tmp_path):
    augment = get_preset("reference").augment(copies=(1,), ops=("blur",), chain_lengths=(1, 1))
    exp = Experiment(ExperimentConfig(data=str(tree_dataset), n=8, n_classes=2, methods=("phash",), augment=augment,
                                      distractors=12), tmp_path)
    manifest = exp.distractor_manifest
    assert len(manifest) == 12 and (manifest["kind"] == "copy").all() and manifest["origin"].is_unique

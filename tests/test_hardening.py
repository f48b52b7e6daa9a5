"""Hostile and careless input, safe serving and the cache's housekeeping, on real parts."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from malle.cli import main
from malle.dashboard import frame
from malle.data.sampling import discover
from malle.errors import BadImage, DatasetError
from malle.io import cache
from malle.io.images import MAX_ASPECT, encode_jpeg, load_rgb
from malle.io.naming import MAX_NAME_BYTES, safe_file_name
from malle.lab import experiment, stages
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.ops import OPS, AugmentConfig, float_param, sample_params

SMALL = dict(n=6, n_classes=1, augment=AugmentConfig(copies=(2,), chain_lengths=(1, 2)), methods=("phash",))


def remove_deep_tree(top: Path) -> None:
    """Delete a folder tree bottom-up without recursion."""
    for folder, _, files in sorted(os.walk(top, topdown=True), key=lambda entry: -len(entry[0])):
        for name in files:
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


def flat_dataset(folder: Path, photos: list[Path], names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, photo in zip(names, photos):
        (folder / name).write_bytes(photo.read_bytes())
    return folder


# -- serving: allowed folders ------------------------------------------------------------------------
def test_a_folder_outside_the_allowed_roots_is_refused_in_one_line(tmp_path):
    inside = tmp_path / "allowed" / "data"
    inside.mkdir(parents=True)
    roots = [tmp_path / "allowed"]
    assert frame.resolve_folder(str(inside), roots) == inside.resolve()
    for outside in ("/", "/etc", str(inside / ".." / ".." / "..")):
        with pytest.raises(DatasetError, match="outside the folders this dashboard may read") as err:
            frame.resolve_folder(outside, roots)
        assert "\n" not in str(err.value) and "MALLE_ALLOWED_ROOTS" in str(err.value)
    (tmp_path / "allowed" / "escape").symlink_to("/etc")
    with pytest.raises(DatasetError, match="outside"):
        frame.resolve_folder(str(tmp_path / "allowed" / "escape"), roots)


def test_allowed_roots_default_to_home_and_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("MALLE_ALLOWED_ROOTS", raising=False)
    assert frame.allowed_roots() == list(dict.fromkeys([Path.home().resolve(), Path.cwd().resolve()]))
    monkeypatch.setenv("MALLE_ALLOWED_ROOTS", f"{tmp_path}{os.pathsep}/data")
    assert frame.allowed_roots() == [tmp_path.resolve(), Path("/data").resolve()]


def test_the_walk_follows_no_link_out_of_the_allowed_roots_and_shows_relative_paths(tmp_path, demo_photos):
    data = flat_dataset(tmp_path / "data", demo_photos, ["a_1.jpg", "b_1.jpg"])
    secret = tmp_path / "private" / "passwords-2024.jpg"
    secret.parent.mkdir()
    secret.write_bytes(demo_photos[5].read_bytes())
    (data / "c_1.jpg").symlink_to(secret)
    (data / "linked").symlink_to(secret.parent, target_is_directory=True)
    candidates, skipped = discover(data, allowed=[data])
    assert sorted(c.rel for c in candidates) == ["a_1.jpg", "b_1.jpg"]
    assert {s["path"] for s in skipped} == {"c_1.jpg", "linked"}
    assert all(s["reason"] == "link leads outside the allowed folders" for s in skipped)
    assert not any("private" in s["path"] or s["path"].startswith("/") for s in skipped)
    followed, _ = discover(data)  # the CLI follows links anywhere the user points
    assert len(followed) == 4


def test_the_dashboard_refuses_the_root_folder(demo_env, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MALLE_ALLOWED_ROOTS", str(tmp_path))
    at = AppTest.from_file(str(Path(__file__).parents[1] / "streamlit_app.py"), default_timeout=120).run()
    at.radio(key="data_source").set_value(frame.FOLDER).run()
    at.text_input(key="data_folder").set_value("/").run()
    assert not at.exception
    assert len(at.error) == 1 and "outside the folders this dashboard may read" in at.error[0].value


def test_a_cached_experiment_opens_while_another_is_being_built():
    store = frame.ResultsStore()
    store.obtain(("cached", "c"), lambda: "ready")
    release, started = threading.Event(), threading.Event()

    def slow_build():
        started.set()
        release.wait(30)
        return "slow"

    builder = threading.Thread(target=store.obtain, args=(("slow", "c"), slow_build))
    builder.start()
    started.wait(10)
    assert store.building(("slow", "c")) and not store.building(("cached", "c"))
    assert store.get(("cached", "c")) == "ready"
    assert store.obtain(("cached", "c"), lambda: pytest.fail("rebuilt")) == "ready"
    release.set()
    builder.join(10)
    assert store.get(("slow", "c")) == "slow"


# -- names, trees and uploads ----------------------------------------------------------------------
def test_long_names_deep_trees_and_unicode_classes_run_without_a_traceback(tmp_path, demo_photos):
    data = tmp_path / "data"
    long_a, long_b = "x" * 230 + "_a.jpg", "x" * 230 + "_b.jpg"  # same 200-byte prefix, distinct names
    flat_dataset(data, demo_photos, [long_a, long_b, "猫_1.jpg", "犬_1.jpg", "plain_1.jpg"])
    deep = data
    for _ in range(1100):  # one level at a time: Path.mkdir(parents=True) itself recurses
        deep = deep / "d"
        deep.mkdir()
    (deep / "deep_1.jpg").write_bytes(demo_photos[7].read_bytes())
    try:
        exp = Experiment(ExperimentConfig(data=str(data), **{**SMALL, "n": 10}), tmp_path / "cache")
        results = exp.run()
    finally:
        remove_deep_tree(data / "d")  # shutil.rmtree (and so pytest's cleanup) recurses past Python's limit
    originals = exp.originals
    assert len(originals) == 6 and originals["file"].is_unique
    assert max(len(f.encode()) for f in [*originals["file"], *exp.manifest["file"]]) <= MAX_NAME_BYTES + 16
    assert {"猫", "犬"} <= set(originals["class"]) and "d" in set(originals["class"])
    assert originals.loc[originals["class"] == "猫", "file"].iloc[0].startswith("猫_")
    assert len(results.per_query) == 12


def test_upload_names_are_shortened_sanitised_and_keep_their_class(tmp_path, demo_photos):
    data = demo_photos[0].read_bytes()
    files = [("猫_1.png", data), ("犬_1.png", data), ("y" * 300 + ".jpg", data), ("../../etc/passwd_1.jpg", data)]
    saved = frame.save_uploads(files, tmp_path)
    assert saved.saved[:2] == ["猫_1.png", "犬_1.png"]
    assert len(saved.saved[2].encode()) <= MAX_NAME_BYTES + 4 and saved.saved[2].endswith(".jpg")
    assert saved.saved[3] == "passwd_1.jpg"
    candidates, _ = discover(saved.folder)
    assert {c.label for c in candidates} == {"猫", "犬", Path(saved.saved[2]).stem, "passwd"}
    assert safe_file_name("\x00\x1b[31m.jpg", set()) == "31m.jpg" and safe_file_name("..", set()) == "image"


def test_an_extreme_strip_upload_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (8, 11_000_000)).save(buf, format="PNG")  # 0.7 MB on disk, 88 million pixels
    assert len(buf.getvalue()) < frame.MAX_UPLOAD_MB * 2**20
    start = time.perf_counter()
    with pytest.raises(BadImage, match="extreme aspect ratio"):
        frame.check_upload("strip.png", buf.getvalue())
    assert time.perf_counter() - start < 5  # refused from the header; decoding would take far longer


@pytest.mark.parametrize("size", [(20, 20 * MAX_ASPECT), (20 * MAX_ASPECT, 20), (9000, 8)])
def test_no_op_makes_an_image_that_cannot_be_saved(size):
    if max(size) > MAX_ASPECT * min(size):
        with pytest.raises(BadImage):
            load_rgb(_png(Image.new("RGB", size, "white")))
        return
    img = Image.new("RGB", size, "white")
    rng = np.random.default_rng(0)
    for _ in range(20):
        for step in sample_params(rng, list(OPS), img.size):
            out = OPS[step.op].apply(img, step.params)
            assert max(out.size) <= 20 * 384 and min(out.size) >= 1
            assert out.width * out.height < Image.MAX_IMAGE_PIXELS
            encode_jpeg(out)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_param_spec_ranges_are_checked_once_in_the_constructor():
    with pytest.raises(ValueError, match="outside"):
        float_param("angle", -15.0, 15.0, 20.0)
    from malle.ops import Uniform
    with pytest.raises(ValueError, match="leaves the range"):
        float_param("angle", -15.0, 15.0, 0.0, sample=Uniform(-30.0, 30.0))


# -- the engine's seams ------------------------------------------------------------------------------
def test_a_cached_run_builds_no_model(tmp_path, tree_dataset):
    config = ExperimentConfig(data=str(tree_dataset), n=6, n_classes=1, methods=("efficientnet_lite2",),
                              augment=AugmentConfig(copies=(2,), chain_lengths=(1, 1)))
    Experiment(config, tmp_path).run()
    again = Experiment(config, tmp_path)
    assert again.run().timings()["cached"].all()
    assert again.descriptor("efficientnet_lite2")._model is None


def test_an_original_keeps_its_copies_when_the_dataset_grows(tmp_path, demo_photos):
    small = flat_dataset(tmp_path / "small", demo_photos, [f"k{i}_1.jpg" for i in range(5)])
    large = flat_dataset(tmp_path / "large", demo_photos, [f"k{i}_1.jpg" for i in range(5)] + ["a0_1.jpg"])
    config = dict(n=10, n_classes=0, augment=AugmentConfig(copies=(2,)), methods=("phash",))
    first = Experiment(ExperimentConfig(data=str(small), **config), tmp_path / "c").run().experiment.manifest
    second = Experiment(ExperimentConfig(data=str(large), **config), tmp_path / "c").run().experiment.manifest
    shared = second[second["source"].isin(first["source"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(shared[["file", "chain"]], first[["file", "chain"]])


def test_pixel_stage_keys_follow_the_pixel_libraries(tmp_path, tree_dataset, monkeypatch):
    assert {"Pillow", "libjpeg", "torchvision", "numpy"} <= set(experiment.pixel_versions())
    exp = Experiment(ExperimentConfig(data=str(tree_dataset), **SMALL), tmp_path)
    before = (exp.samples_folder, exp.copies_folder)
    upgraded = {**experiment.pixel_versions(), "Pillow": "99.0"}
    monkeypatch.setattr(stages.base, "_pixel_versions", lambda: tuple(upgraded.items()))  # what the stages read
    after = Experiment(ExperimentConfig(data=str(tree_dataset), **SMALL), tmp_path)
    assert after.samples_folder != before[0] and after.copies_folder != before[1]


def test_outputs_respect_the_umask(tmp_path, tree_dataset):
    code = ("import os, sys; os.umask(0o027); from malle.cli import main; "
            f"sys.exit(main(['run', '--data', {str(tree_dataset)!r}, '--methods', 'phash', '--n', '4', "
            f"'--out', {str(tmp_path / 'out')!r}, '--cache', {str(tmp_path / 'cache')!r}]))")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=Path(__file__).parents[1])
    files = [*(tmp_path / "out").iterdir(), *(p for p in (tmp_path / "cache").rglob("*") if p.is_file())]
    folders = [p for p in (tmp_path / "cache").rglob("*") if p.is_dir()]
    assert files and folders
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o750}


# -- housekeeping -----------------------------------------------------------------------------------
def test_cache_info_verify_prune_and_clear(tmp_path, tree_dataset, capsys):
    root = tmp_path / "cache"
    Experiment(ExperimentConfig(data=str(tree_dataset), **SMALL), root).run()
    assert main(["cache", "info", "--cache", str(root)]) == 0
    out = capsys.readouterr().out
    for kind in ("samples", "copies", "embed", "search"):
        assert kind in out
    assert "Total:" in out

    assert main(["cache", "verify", "--cache", str(root)]) == 0
    assert f"{len(cache.entries(root))} entries verified, 0 damaged" in capsys.readouterr().out
    victim = next((root / "embed").glob("*/queries.npy"))
    victim.write_bytes(victim.read_bytes()[:-4])
    (root / "copies" / ".deadbeef.tmp-killed").mkdir()
    assert main(["cache", "verify", "--cache", str(root)]) == 1
    assert "queries.npy has" in capsys.readouterr().out

    assert main(["cache", "prune", "--cache", str(root)]) == 0
    pruned = capsys.readouterr().out
    assert "removed embed/" in pruned and "removed copies/.deadbeef.tmp-killed" in pruned
    assert not cache.verify(root) and not cache.leftovers(root)

    assert main(["cache", "prune", "--cache", str(root), "--max-size", "1K"]) == 0
    assert cache.total_bytes(root) <= 1024 or not cache.entries(root)
    capsys.readouterr()
    Experiment(ExperimentConfig(data=str(tree_dataset), **SMALL), root).run()
    assert main(["cache", "clear", "--cache", str(root)]) == 0
    assert not cache.entries(root)


def test_prune_removes_the_least_recently_used_first(tmp_path, tree_dataset):
    root = tmp_path / "cache"
    old = Experiment(ExperimentConfig(data=str(tree_dataset), seed=1, **SMALL), root)
    old.run()
    Experiment(ExperimentConfig(data=str(tree_dataset), seed=2, **SMALL), root).run()
    for folder in (old.samples_folder, old.copies_folder):
        os.utime(folder, (1, 1))  # long unused
    keep = cache.total_bytes(root) - sum(cache._size(f) for f in (old.samples_folder, old.copies_folder))
    removed = cache.prune(root, keep + 512)
    assert set(removed) == {f"samples/{old.samples_folder.name}", f"copies/{old.copies_folder.name}"}

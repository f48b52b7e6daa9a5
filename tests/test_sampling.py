import shutil
from pathlib import Path

import pytest

from malle.data.sampling import (
    Candidate,
    DatasetError,
    class_from_filename,
    discover,
    original_name,
    priority_order,
    select,
    write_originals,
)


def test_flat_layout_class_is_prefix_before_first_underscore():
    assert class_from_filename("n01440764_tench.JPEG") == "n01440764"
    assert class_from_filename("n01440764_10043_extra.JPEG") == "n01440764"
    assert class_from_filename("lonely.jpg") == "lonely"


def test_tree_layout_class_is_top_folder(tree_dataset):
    candidates, skipped = discover(tree_dataset)
    assert len(candidates) == 24 and not skipped
    assert {c.label for c in candidates} == {f"c{i:02d}" for i in range(8)}
    assert all(c.path.parent.name == c.label for c in candidates)


def test_flat_layout_discovery(tmp_path, demo_photos):
    for i, name in enumerate(["n01_tench.JPEG", "n01_two.JPEG", "n02_x.jpg", "solo.png"]):
        shutil.copyfile(demo_photos[i], tmp_path / name)
    (tmp_path / ".DS_Store").write_text("hidden")
    (tmp_path / "readme.md").write_text("hi")
    candidates, skipped = discover(tmp_path)
    assert [c.label for c in candidates] == ["n01", "n01", "n02", "solo"]
    assert [s["path"].split("/")[-1] for s in skipped] == ["readme.md"]


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        discover(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no image files"):
        discover(tmp_path)


def _fake(n_classes, per_class):
    return [Candidate(Path(f"/d/c{c}/c{c}_{i}.jpg"), f"c{c}")
            for c in range(n_classes) for i in range(per_class)]


def test_priority_takes_whole_classes_then_fills_without_repeats():
    cands = _fake(50, 5)
    order = priority_order(cands, n_classes=20, seed=0)
    assert len(order) == len(set(order)) == 250
    first_classes = {c.label for c in order[:100]}
    assert len(first_classes) == 20  # 20 whole classes x 5 images come first
    assert all(sum(c.label == label for c in order[:100]) == 5 for label in first_classes)
    assert order == priority_order(cands, 20, 0)
    assert order != priority_order(cands, 20, 1)


def test_select_fills_to_n_and_is_deterministic(tree_dataset):
    cands, _ = discover(tree_dataset)
    a, _ = select(cands, n=10, n_classes=2, seed=3)
    b, _ = select(cands, n=10, n_classes=2, seed=3)
    assert [c.path for c, _ in a] == [c.path for c, _ in b]
    assert len(a) == 10 and len({c.path for c, _ in a}) == 10
    assert len({c.label for c, _ in a[:6]}) == 2  # 2 whole classes of 3, then the fill


def test_bad_picks_are_replaced_and_recorded(bad_folder):
    folder, expected = bad_folder
    cands, _ = discover(folder)
    picked, skipped = select(cands, n=1000, n_classes=20, seed=0)
    names = {c.path.name for c, _ in picked}
    assert not names & set(expected)
    assert {s["path"].split("/")[-1] for s in skipped} == set(expected) - {"notes.txt"}


def test_original_names_are_collision_proof():
    taken = set()
    a = original_name(Candidate(Path("/d/n01/n01_5.JPEG"), "n01"), taken)
    b = original_name(Candidate(Path("/x/n01/n01_5.png"), "n01"), taken)
    c = original_name(Candidate(Path("/d/my_class/a b.jpg"), "my_class"), taken)
    assert a[0] == "n01_5.JPEG" and b[0] == "n01_5-2.JPEG"
    assert c[0] == "my-class_a-b.JPEG"  # "_" only ever separates class from instance


def test_write_originals_copies_jpegs_verbatim(tree_dataset, tmp_path):
    cands, _ = discover(tree_dataset)
    picked, _ = select(cands, n=3, n_classes=1, seed=0)
    table = write_originals(picked, tmp_path)
    for row in table.itertuples():
        assert (tmp_path / row.file).read_bytes() == (tree_dataset / row.source_path).read_bytes()
    assert list(table["file"]) == sorted(table["file"])

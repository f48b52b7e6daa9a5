"""The headless CLI, including bad input and the ResNet-50 weights paths."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
import torchvision
from conftest import GOOD_IN_BAD_FOLDER

from malle.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_input_folder_is_processed_with_skips(bad_folder, tmp_path, capsys):
    folder, expected = bad_folder
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, "run", "--data", folder, "--methods", "phash", "--n", 50,
                          "--out", out_dir, "--cache", tmp_path / "cache")
    assert code == 0, err
    skipped = pd.read_csv(out_dir / "skipped.csv")
    assert list(skipped.columns) == ["path", "reason"]
    reasons = {p.split("/")[-1]: r for p, r in zip(skipped["path"], skipped["reason"])}
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name]
    assert "Skipped 7 file(s)" in out
    assert len(pd.read_csv(out_dir / "originals.csv")) == GOOD_IN_BAD_FOLDER
    recall = pd.read_csv(out_dir / "recall.csv")
    assert list(recall.columns) == ["method", "level", "k", "recall"]
    assert set(recall["k"]) == {1, 3, 5, 10, 11}
    for name in ("per_op.csv", "per_query.csv", "manifest.csv", "by_chain_length.csv", "config.json"):
        assert (out_dir / name).is_file()
    assert "Instance Recall@K" in out and "Class Recall@K" in out


@pytest.mark.parametrize("make", [lambda p: p / "absent", lambda p: p])
def test_missing_or_empty_folder_is_a_one_line_error(tmp_path, capsys, make):
    code, out, err = _run(capsys, "run", "--data", make(tmp_path), "--methods", "phash", "--cache", tmp_path / "c")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("malle: error:")
    assert "Traceback" not in err


def test_explicit_resnet50_without_weights_stops_before_any_work(tree_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.delenv("MALLE_RESNET50_WEIGHTS", raising=False)
    cache_dir = tmp_path / "cache"
    code, out, err = _run(capsys, "run", "--data", tree_dataset, "--methods", "resnet50,phash", "--cache", cache_dir)
    assert code == 2
    assert "--resnet50-weights" in err and "Traceback" not in err
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.JPEG"))  # no stage ran


def test_resnet50_from_a_weights_file(tree_dataset, tmp_path, capsys):
    weights = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    code, out, err = _run(capsys, "run", "--data", tree_dataset, "--methods", "resnet50", "--n", 4,
                          "--copies", 2, "--chain-lengths", "1-1", "--resnet50-weights", weights,
                          "--out", tmp_path / "out", "--cache", tmp_path / "cache")
    assert code == 0, err
    assert "ResNet-50" in out
    assert len(pd.read_csv(tmp_path / "out" / "per_query.csv")) == 8


def test_demo_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "malle", "demo", "--n", "6", "--methods", "phash",
                           "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pHash" in proc.stdout
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert manifest["source"].nunique() == 6 and set(manifest["chain_lengths"]) == {"uniform 1..5"}

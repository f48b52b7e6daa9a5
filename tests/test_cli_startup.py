"""A command line that answers at once, and what it writes: no heavy import before a command runs, the catalogue
the parser offers equal to the registries it copies, one-line notices, 100-column progress bars, rounded CSVs,
and an --out folder that keeps another configuration's results unless --force."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd
import pytest

from malle.cli import catalogue, main
from malle.cli.options import BAR_COLUMNS, progress_bar
from malle.descriptors.resnet50_weights import resnet50_notice
from malle.lab.results import rounded

HEAVY = ("torch", "torchvision", "faiss", "pandas", "numpy", "onnxruntime", "openvino", "streamlit", "altair",
         "PIL", "cv2", "timm", "malle.descriptors", "malle.lab", "malle.ops")


def modules_loaded_by(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``code``."""
    probe = f"import sys\n{code}\nprint('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.rpartition("loaded:")[2].strip().split(",") if m]


def test_building_the_parser_imports_nothing_heavy():
    assert modules_loaded_by("import malle.cli\nmalle.cli.build_parser()") == []


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["run", "--help"], ["bank", "match", "--help"],
                                  ["run", "--data", "x", "--methods", "no_such_method"],
                                  ["demo", "--methods", "phash+norm"], ["severity", "--ops", "nope"],
                                  ["frobnicate"]])
def test_help_version_and_usage_errors_import_nothing_heavy(argv):
    code = f"from malle.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert modules_loaded_by(code) == []


def test_usage_errors_are_one_line_with_status_2():
    result = subprocess.run([sys.executable, "-m", "malle", "run", "--data", "x", "--methods", "no_such_method"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown method 'no_such_method'" in result.stderr.splitlines()[-1]


def test_the_catalogue_is_what_the_registries_hold():
    from malle.bank.bank import MAX_K
    from malle.data.sampling import DEMO_DISTRACTORS, DEMO_N
    from malle.dedup.folder import PREFERENCE
    from malle.descriptors import DEFAULT_METHODS, DESCRIPTORS, weight_options
    from malle.descriptors.onnx_spec import SPEC_SUFFIX
    from malle.descriptors.plugins import GROUP
    from malle.descriptors.registry import METHODS_DIR_ENV
    from malle.inference.precision import ENGINES, PRECISIONS
    from malle.ops import OPS, PRESETS, REFERENCE_OPS
    from malle.scale import ondisk
    from malle.tricks.normalise import DEFAULT_SCORE_NORM

    assert catalogue.METHODS == tuple(DESCRIPTORS) and catalogue.DEFAULT_METHODS == DEFAULT_METHODS
    assert {m: (c.name, c.score_name) for m, c in catalogue.METRICS.items()} == {
        m: (cls.metric.name, cls.metric.score_name) for m, cls in DESCRIPTORS.items()}
    assert {o: (w.method, w.label, w.env) for o, w in catalogue.WEIGHT_OPTIONS.items()} == {
        o: (cls.name, cls.display_name(), cls.weights_env) for o, cls in weight_options().items()}
    assert (catalogue.PLUGIN_GROUP, catalogue.SPEC_SUFFIX, catalogue.METHODS_DIR_ENV) == (
        GROUP, SPEC_SUFFIX, METHODS_DIR_ENV)
    assert (catalogue.PRECISIONS, catalogue.ENGINES) == (PRECISIONS, ENGINES)
    assert catalogue.OPS == tuple(OPS) and catalogue.REFERENCE_OPS == tuple(REFERENCE_OPS)
    assert catalogue.PRESETS == {name: preset.description for name, preset in PRESETS.items()}
    assert catalogue.DEFAULT_SCORE_NORM == DEFAULT_SCORE_NORM
    assert (catalogue.DEMO_N, catalogue.DEMO_DISTRACTORS) == (DEMO_N, DEMO_DISTRACTORS)
    assert catalogue.BANK_MAX_K == MAX_K and catalogue.DEDUP_PREFERENCE == PREFERENCE
    assert (catalogue.TRAIN_PER_LIST, catalogue.MIN_TRAIN, catalogue.SHARDS_PER_TASK) == (
        ondisk.TRAIN_PER_LIST, ondisk.MIN_TRAIN, ondisk.SHARDS_PER_TASK)


def test_the_resnet50_notice_is_one_line(tmp_path, capsys, monkeypatch):
    """A default run without ResNet-50's weights says so in the one line the dashboard also shows."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.delenv("MALLE_RESNET50_WEIGHTS", raising=False)
    assert main(["stages", "--n", "4", "--cache", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "ResNet-50" in line or "resnet50" in line] == [resnet50_notice()]
    assert len(resnet50_notice()) < 200


def test_progress_bars_are_100_columns_with_short_names():
    out = io.StringIO()
    label = "SSCD distilled (MobileNetV4 student, fp16 weights, 512-d, ONNX Runtime fp32): copies"
    bar = progress_bar(total=500, desc=label, file=out, mininterval=0)
    for _ in range(500):
        bar.update(1)
    bar.close()
    lines = [line for line in out.getvalue().replace("\r", "\n").split("\n") if line.strip()]
    assert bar.desc == "SSCD distilled: copies" and bar.ncols == BAR_COLUMNS
    assert lines and all(len(line) <= BAR_COLUMNS for line in lines)
    assert any("SSCD distilled: copies" in line and "500/500" in line for line in lines)


def test_csv_floats_keep_the_digits_that_mean_something():
    table = pd.DataFrame({"method": ["a", "b"], "score": pd.Series([1.000000238418579, 0.40885138], dtype="float32"),
                          "recall": [0.6458333333333334, 1 / 3], "rank": [1, 2], "seconds": [12.3456789, 0.0004],
                          "ms_per_query": [0.123456, 2.0], "images_per_s": [123.456, 7.0]})
    text = rounded(table).to_csv(index=False)
    assert text.splitlines()[1:] == ["a,1.0,0.645833,1,12.346,0.123,123.5", "b,0.408851,0.333333,2,0.0,2.0,7.0"]


def _demo(tmp_path, *extra: str) -> int:
    return main(["demo", "--n", "4", "--methods", "phash", "--distractors", "0", "--out", str(tmp_path / "out"),
                 "--cache", str(tmp_path / "cache"), *extra])


def test_out_keeps_another_configurations_results_unless_forced(tmp_path, capsys):
    assert _demo(tmp_path) == 0
    written = (tmp_path / "out" / "per_query.csv").read_bytes()
    assert _demo(tmp_path) == 0  # the same configuration again rewrites its own folder
    assert (tmp_path / "out" / "per_query.csv").read_bytes() == written
    capsys.readouterr()
    assert _demo(tmp_path, "--seed", "1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and "differs in seed" in err
    assert (tmp_path / "out" / "per_query.csv").read_bytes() == written
    assert json.loads((tmp_path / "out" / "config.json").read_text())["seed"] == 0
    assert _demo(tmp_path, "--seed", "1", "--force") == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["seed"] == 1

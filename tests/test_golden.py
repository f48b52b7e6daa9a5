"""Results don't move by accident: a small run and a small severity sweep against goldens in tests/golden/.

The goldens were written by the code before the stage registry (issue 14, commit d6aec84), with the
commands in tests/golden/*/COMMAND. Every output is compared byte for byte, except:

- timings.csv and calibration.json (fitted from predictions.parquet alone, which is compared), and the columns of
  costs.csv that describe the machine rather than the results: the wall-time
  columns (images_per_s, ms_per_query) and what ran each method on which CPU (runtime, cpu);
- config.json's ``data``, the demo photos' path on this machine, and keys of options added since (each at its
  default; the golden's keys must all be there, unchanged);
- Parquet files, compared as their tables written to CSV (a file's bytes also hold the writer's version).

Float methods: the hashes (pHash, PDQ) are exact on any CPU, but ONNX Runtime may pick other kernels on
another CPU kind (AVX2, AVX-512, AMX) and move a float in its last bits. On the machine the goldens come from,
every file matches byte for byte. Where a file does not, only rows of a float method may differ, and there only
in float columns, within a relative 1e-4; integers (ranks, counts, sizes) and text (ids, files, ops) stay exact.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from malle.cli import main

GOLDEN = Path(__file__).parent / "golden"
MACHINE_COLUMNS = {"costs.csv": ("images_per_s", "ms_per_query", "runtime", "cpu")}
FLOAT_METHODS = ("sscd_distilled",)
FLOAT_RTOL = 1e-4


def command_of(name: str) -> list[str]:
    return (GOLDEN / name / "COMMAND").read_text().split()[3:]  # after "python3.12 -m malle"


def without_columns(text: str, dropped: tuple[str, ...]) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    keep = [i for i, column in enumerate(rows[0]) if column not in dropped]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[row[i] for i in keep] for row in rows])
    return out.getvalue()


def comparable(path: Path) -> tuple[str, str]:
    """(golden file name, text) of one output file, in the form the goldens keep."""
    if path.suffix == ".parquet":
        return path.name + ".csv", pd.read_parquet(path).to_csv(index=False)
    if path.name == "config.json":
        config = json.loads(path.read_text())
        config.pop("data")
        return path.name, json.dumps(config, indent=2, sort_keys=True) + "\n"
    text = path.read_text()
    return path.name, without_columns(text, MACHINE_COLUMNS[path.name]) if path.name in MACHINE_COLUMNS else text


# calibration.json is fitted from predictions.parquet alone, which is compared here, and tests/test_calibration_run.py
# checks that the same predictions give the same calibration.
NOT_COMPARED = ("timings.csv", "calibration.json")


def comparable_outputs(out: Path) -> dict[str, str]:
    return dict(comparable(p) for p in sorted(out.iterdir()) if p.name not in NOT_COMPARED)


def _numbers(column: pd.Series) -> pd.Series | None:
    numbers = pd.to_numeric(column.replace("", "nan"), errors="coerce")
    return None if numbers.isna().ne(column.isin(["", "nan", "NaN"])).any() else numbers


def assert_same(name: str, golden: str, live: str) -> None:
    if golden == live:
        return
    want, got = (pd.read_csv(io.StringIO(t), dtype=str, keep_default_na=False) for t in (golden, live))
    assert list(want.columns) == list(got.columns) and len(want) == len(got), f"{name}: another shape"
    floaty = want.isin(FLOAT_METHODS).any(axis=1).to_numpy()
    pd.testing.assert_frame_equal(want[~floaty], got[~floaty], obj=f"{name}, exact rows")
    for column in want.columns:
        a, b = want.loc[floaty, column], got.loc[floaty, column]
        numbers = _numbers(a), _numbers(b)
        is_float = numbers[0] is not None and numbers[1] is not None and not a.str.fullmatch(r"-?\d*").all()
        if is_float:
            np.testing.assert_allclose(numbers[1], numbers[0], rtol=FLOAT_RTOL, atol=1e-6, err_msg=f"{name}:{column}")
        else:
            assert a.tolist() == b.tolist(), f"{name}: {column} of a float method moved"


@pytest.mark.parametrize("name", ["run", "severity"])
def test_outputs_match_the_golden(name, tmp_path, monkeypatch):
    monkeypatch.delenv("MALLE_RESNET50_WEIGHTS", raising=False)
    out = tmp_path / "out"
    assert main([*command_of(name), "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    live = comparable_outputs(out)
    golden = {p.name: p.read_text() for p in sorted((GOLDEN / name).iterdir()) if p.name != "COMMAND"}
    assert sorted(live) == sorted(golden)
    for file, text in golden.items():
        if file == "config.json":  # an option added since keeps its key here, at a default that changes nothing
            config = json.loads(live[file])
            assert {key: config.get(key) for key in json.loads(text)} == json.loads(text)
        else:
            assert_same(file, text, live[file])


def test_a_moved_float_of_a_hash_fails_and_of_a_float_method_within_tolerance_passes():
    golden = "method,rank,score\nphash,1,32.0\nsscd_distilled,1,0.9312345\n"
    assert_same("x.csv", golden, golden.replace("0.9312345", "0.9312346"))
    for moved in (golden.replace("32.0", "33.0"), golden.replace("sscd_distilled,1", "sscd_distilled,2"),
                  golden.replace("0.9312345", "0.95")):
        with pytest.raises(AssertionError):
            assert_same("x.csv", golden, moved)

"""Re-record the goldens for a change of the CSVs' rounding alone, and show that it is alone.

    python3.12 tests/golden/rerecord.py            # compare only: exit 1 on any difference but rounding
    python3.12 tests/golden/rerecord.py --write    # then write the new goldens
    python3.12 tests/golden/rerecord.py --moved openset.csv,manifest.csv --write   # a deliberate change

Runs each golden's COMMAND (as tests/test_golden.py does), takes its outputs in the form the goldens keep, and
compares them with the goldens on disk, cell by cell: a cell may differ only where the old value, rounded to the
decimals ``malle.lab.results.rounded`` gives its column, is the new value. Files, columns, rows and every other
cell must be identical. It prints, per file, how many cells the rounding changed.

``--moved`` names the files a change moves on purpose (say so in CHANGELOG.md, with the before and after): they
are taken as they now are, and it prints how many of their lines changed; every other file is held to rounding.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent
sys.path[:0] = [str(GOLDEN.parents[1]), str(GOLDEN.parent)]

from test_golden import command_of, comparable_outputs  # noqa: E402  (the test's own reading of the outputs)

from malle.cli import main  # noqa: E402
from malle.lab.results import CSV_DECIMALS, TIMING_DECIMALS  # noqa: E402


def rounds_to(old: str, new: str, decimals: int) -> bool:
    """Whether ``old``, rounded to ``decimals`` as the CSV writer rounds (numpy), is ``new`` (both as CSV text)."""
    try:
        return float(np.round(float(old), decimals)) == float(new)
    except ValueError:
        return False


def compare(name: str, old: str, new: str) -> tuple[int, list[str]]:
    """(cells changed by rounding, problems) of one file."""
    if old == new:
        return 0, []
    if name == "config.json":  # options added since keep their keys at defaults, as tests/test_golden.py allows
        recorded, live = json.loads(old), json.loads(new)
        return 0, [] if {key: live.get(key) for key in recorded} == recorded else [f"{name}: a recorded key moved"]
    if not name.endswith(".csv"):
        return 0, [f"{name}: differs and is not a CSV"]
    before, after = list(csv.reader(io.StringIO(old))), list(csv.reader(io.StringIO(new)))
    if before[0] != after[0] or len(before) != len(after):
        return 0, [f"{name}: another header or row count"]
    changed, problems = 0, []
    for line, (a, b) in enumerate(zip(before[1:], after[1:]), 2):
        for column, x, y in zip(before[0], a, b):
            if x == y:
                continue
            if rounds_to(x, y, TIMING_DECIMALS.get(column, CSV_DECIMALS)):
                changed += 1
            else:
                problems.append(f"{name} line {line} {column}: {x} -> {y} is not a rounding")
    return changed, problems


def moved(name: str, old: str, new: str) -> str:
    """What a deliberate change did to one file, in lines."""
    before, after = old.splitlines(), new.splitlines()
    if before[:1] != after[:1]:
        return f"{name}: moved deliberately, another header ({len(before)} -> {len(after)} lines)"
    changed = sum(a != b for a, b in zip(before, after)) + abs(len(before) - len(after))
    return f"{name}: moved deliberately, {changed} of {len(before)} lines ({len(before)} -> {len(after)} lines)"


def rerecord(golden: Path, write: bool, deliberate: frozenset[str] = frozenset()) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        if main([*command_of(golden.name), "--out", str(out), "--cache", str(Path(tmp) / "cache")]) != 0:
            return [f"{golden.name}: the command failed"]
        live = comparable_outputs(out)
    kept = {p.name: p.read_text() for p in sorted(golden.iterdir()) if p.name not in ("COMMAND", "README")}
    if sorted(live) != sorted(kept):
        return [f"{golden.name}: other files {sorted(set(live) ^ set(kept))}"]
    problems = []
    for name in kept:
        if name in deliberate and name != "config.json":
            print(f"{golden.name}/{moved(name, kept[name], live[name])}")
            continue
        changed, found = compare(name, kept[name], live[name])
        problems += found
        same = "its recorded keys identical" if name == "config.json" else "identical"
        print(f"{golden.name}/{name}: {same if not changed and not found else f'{changed} cells rounded'}")
    if write and not problems:
        for name, text in live.items():
            if name != "config.json":  # kept as recorded: its keys are compared, not its bytes
                (golden / name).write_text(text)
    return problems


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the new goldens when rounding is all that moved")
    parser.add_argument("--moved", default="", metavar="FILES",
                        help="comma-separated golden files a change moves on purpose: written as they now are")
    args = parser.parse_args()
    deliberate = frozenset(filter(None, args.moved.split(",")))
    problems = [p for golden in sorted(d for d in GOLDEN.iterdir() if (d / "COMMAND").is_file())
                for p in rerecord(golden, args.write, deliberate)]
    for problem in problems:
        print(problem)
    besides = f", besides {', '.join(sorted(deliberate))}" if deliberate else ""
    print(f"only the rounding moved{besides}" if not problems
          else f"{len(problems)} difference(s) that are not rounding")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main_())

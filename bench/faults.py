"""Inject faults into real runs and report how Malle survives each.

    python bench/faults.py [--no-cnn]

Starts from a clean run on 12 real demo photos (pHash), then for every fault of
``harness.faults`` (a damaged cache, a wrong option, a bad file in the
dataset, an in-place edit, kill -9 mid-stage, two processes on one cache) runs
``python -m malle`` again. Prints one table (fault, outcome, time to recover) and
a closing line ``faults: N injected, N survived, N wrong results, N tracebacks``.
Writes bench/results/faults.md. Exit 1 if any fault was not survived.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import publish  # noqa: E402  (bench/ is on sys.path when run as a script)

from harness import faults  # noqa: E402
from malle.data.sampling import demo_root  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-cnn", action="store_true", help="leave out the two EfficientNet-Lite2 faults")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "faults.md")
    args = parser.parse_args()
    photos = sorted(demo_root().glob("*.jpg"), key=lambda p: int(p.stem))
    with tempfile.TemporaryDirectory(prefix="malle-faults-") as scratch:
        lab = faults.prepare(Path(scratch), photos)
        outcomes = faults.every_fault(lab, None if args.no_cnn else faults.cnn_reference(lab))
    lines = ["| # | fault | expected | outcome | seconds |", "|---|---|---|---|---|"]
    for i, o in enumerate(outcomes, start=1):
        verdict = "survived" if o.survived else "NOT SURVIVED"
        lines.append(f"| {i} | {o.fault} | {o.expected} | {verdict}: {o.detail.replace('|', '/')} | {o.seconds:.2f} |")
    survived = sum(o.survived for o in outcomes)
    wrong = sum(o.wrong_result for o in outcomes)
    tracebacks = sum(o.traceback for o in outcomes)
    lines += ["", f"faults: {len(outcomes)} injected, {survived} survived, {wrong} wrong results, "
                  f"{tracebacks} tracebacks"]
    publish(lines, args.report)
    return 0 if survived == len(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())

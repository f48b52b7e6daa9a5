"""A cold and a cached run of the full 200-original experiment with the default methods, today's code against
an older revision, each through the command line in a fresh process, measured in one run.

    python bench/cold_run.py [--baseline 95e7503] [--data ../shared/datasets/imagenet-200x5/val]

The baseline is checked out into a temporary git worktree and run on the same machine
and Python; its default methods are its own (at 95e7503, the code issue 10 measured:
eager PyTorch EfficientNet-Lite2 and pHash, closed-set). Today's default run also makes
and scores the open-set distractor queries, so it is timed twice: as it is, and with
``--distractors 0`` (the same work as the baseline plus SSCD distilled and attribution).
Writes bench/results/cold_run.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "imagenet-200x5" / "val"
TARGET_RATIO = 0.5  # issue 15: today's whole default run at most half the baseline's, same inputs, same run


def timed_run(code: Path, args: list[str], cache: Path, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "malle", "run", *args, "--cache", str(cache), "--out", str(out)],
                   cwd=code, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def cold_and_cached(code: Path, args: list[str], scratch: Path, name: str) -> tuple[float, float]:
    cache = scratch / f"cache-{name}"
    cold = timed_run(code, args, cache, scratch / f"out-{name}")
    return cold, timed_run(code, args, cache, scratch / f"out-{name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="95e7503", help="git revision to compare with")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "cold_run.md")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"SKIP: reproduction dataset not found at {args.data} (it lives in ../shared, outside the repo)")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="malle-cold-"))
    worktree = scratch / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.baseline], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = ["--data", str(args.data), "--n", "200", "--seed", "0"]
        rows = [
            (f"baseline {args.baseline}, its defaults", *cold_and_cached(worktree, run, scratch, "baseline")),
            ("today, defaults (with open set)", *cold_and_cached(ROOT, run, scratch, "today")),
            ("today, defaults, --distractors 0", *cold_and_cached(ROOT, [*run, "--distractors", "0"], scratch,
                                                                  "closed")),
        ]
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    base_cold = rows[0][1]
    lines = [f"# Cold and cached runs of the 200-original experiment ({args.data.name})", "",
             f"Machine: {machine()}", "", "| code | cold s | cached s | cold × baseline |", "|---|---|---|---|"]
    lines += [f"| {name} | {cold:.1f} | {cached:.1f} | {cold / base_cold:.2f}× |" for name, cold, cached in rows]
    ratio = rows[1][1] / base_cold
    verdict = "met" if ratio <= TARGET_RATIO else f"missed by {ratio - TARGET_RATIO:.2f}×"
    lines += ["", f"Target: today's default cold run at most {TARGET_RATIO:.2f}× the baseline: {ratio:.2f}× "
              f"({verdict}). Load average at the end: {os.getloadavg()[0]:.1f} (the machine's cores are shared)."]
    publish(lines, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

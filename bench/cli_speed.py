"""How fast the command line answers: ``malle --help``, ``--version`` and a usage error, against ``python -c pass``.

    python3.12 bench/cli_speed.py [--runs 9] [--against REV]

Each command is started as a new process, ``--runs`` times, interleaved with the reference so that the machine's
load falls on both alike; the table gives the median wall time and CPU time (user + system, which moves less with
the load) and their ratios to the reference's medians, measured in the same run. ``--against REV`` also times
the package as it was at a git revision (its ``malle/`` exported to a temporary folder and put first on
``PYTHONPATH``). Writes bench/results/cli_speed.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, publish

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ("python -c pass", ["-c", "pass"])
COMMANDS = (
    ("malle --help", ["-m", "malle", "--help"]),
    ("malle --version", ["-m", "malle", "--version"]),
    ("malle run --methods nope (usage error)", ["-m", "malle", "run", "--data", "x", "--methods", "nope"]),
    ("malle bank match --help", ["-m", "malle", "bank", "match", "--help"]),
)


def timed(argv: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one process; the CPU time moves less with the load."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, *argv], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(runs: int, env: dict, cwd: Path) -> dict[str, tuple[float, float]]:
    """Median wall and CPU time of the reference and of each command, the runs interleaved."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in (REFERENCE, *COMMANDS)}
    for _ in range(runs):
        for name, argv in (REFERENCE, *COMMANDS):
            times[name].append(timed(argv, env, cwd))
    return {name: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for name, values in times.items()}


def exported(rev: str, into: Path) -> Path:
    """``malle/`` as it was at ``rev``, in ``into`` (with its pyproject.toml, which gives the version)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "malle", "pyproject.toml"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def rows(label: str, medians: dict[str, tuple[float, float]]) -> list[str]:
    wall, cpu = medians[REFERENCE[0]]
    return [f"| {label} | {name} | {w * 1000:.0f} | {w / wall:.2f}× | {c * 1000:.0f} | {c / cpu:.2f}× |"
            for name, (w, c) in medians.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--against", default=None, metavar="REV", help="also time the package at this revision")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    load = os.getloadavg()[0]
    lines = ["# Command-line start-up (wall and CPU time per new process, median)", "",
             f"Machine: {machine()}",
             f"Runs: {args.runs} per command, interleaved with the reference; load average at the start {load:.2f}",
             "", "| package | command | wall ms | wall × python -c pass | CPU ms | CPU × python -c pass |",
             "|---|---|---|---|---|---|"]
    lines += rows(f"this tree (HEAD {head} and its working changes)", measure(args.runs, env, ROOT))
    if args.against:
        with tempfile.TemporaryDirectory() as tmp:
            old = exported(args.against, Path(tmp))
            lines += rows(f"{args.against}", measure(args.runs, {**env, "PYTHONPATH": str(old)}, old))
    lines += ["", f"Load average at the end {os.getloadavg()[0]:.2f}. The issue's target: under 1 s each."]
    publish(lines, ROOT / "bench" / "results" / "cli_speed.md")


if __name__ == "__main__":
    main()

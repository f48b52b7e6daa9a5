"""Calibrated confidence on a real dataset: each method's expected calibration error on held-back queries.

    python bench/calibration.py [--data ../shared/datasets/imagenet-200x5/val] [--preset reference] [--n 200]
        [--distractors K] [--methods sscd_distilled,phash] [--write-defaults]

Builds each method's open set and its ``calibrate`` stage (``malle.evaluation.calibration``: isotonic regression
of "is a true copy" on the score, cross-fitted over 5 folds of queries), skipping attribution, and reports the ece
and reliability curve measured on the predictions of queries that did not fit the map. Writes
bench/results/calibration-<preset>.md. With ``--write-defaults`` it also writes the maps (fitted on every query)
to malle/bank/calibrations.json, the confidence a collection answers with when no lab run gave it one; do that
from the reproduction run (the reference preset, as README's "Reproduce" and the default thresholds).
Skips with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)
from reproduce import DEFAULT_DATA, markdown  # noqa: E402

from malle.bank import confidence  # noqa: E402
from malle.io import cache  # noqa: E402
from malle.lab.experiment import Experiment, ExperimentConfig  # noqa: E402
from malle.lab.stages.outputs import CalibrationOutputs  # noqa: E402
from malle.ops import get_preset  # noqa: E402

DEFAULT_METHODS = ("sscd_distilled", "sscd", "efficientnet_lite2", "phash", "pdq")
COLUMNS = ["bin", "confidence", "observed", "count"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--preset", default="reference")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--distractors", type=int, default=None)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--write-defaults", action="store_true")
    return parser.parse_args()


def command(args: argparse.Namespace) -> str:
    distractors = f" --distractors {args.distractors}" if args.distractors is not None else ""
    return (f"bench/calibration.py --data {args.data} --preset {args.preset} --n {args.n}{distractors} "
            f"--precision {args.precision} (seed 0)")


def main() -> int:
    args = parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is not here (the shared ImageNet photos)")
        return 0
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    config = ExperimentConfig(data=str(args.data), n=args.n, seed=0, methods=methods,
                              augment=get_preset(args.preset).augment(), distractors=args.distractors,
                              precision=args.precision)
    exp = Experiment(config, args.cache, log=print)
    exp.check()
    fitted = {m: cache.read_json(CalibrationOutputs(exp.stage("calibrate", m).folder).calibration)
              for m in exp.methods}
    measured_on = (f"{command(args)}: {len(exp.manifest):,} copies, {len(exp.distractor_manifest):,} distractor "
                   f"queries, {datetime.now(UTC):%Y-%m-%d}, {machine()}")
    lines = report(exp, fitted, measured_on)
    publish(lines, ROOT / "bench" / "results" / f"calibration-{args.preset}.md")
    if args.write_defaults:
        shipped = {"measured_on": measured_on,
                   "methods": {m: {"map": f["map"], "ece": f["ece"], "n_predictions": f["n_predictions"]}
                               for m, f in fitted.items()}}
        confidence.DEFAULTS_FILE.write_text(json.dumps(shipped, indent=1, sort_keys=True) + "\n")
        print(f"written to {confidence.DEFAULTS_FILE}")
    return 0


def report(exp: Experiment, fitted: dict[str, dict], measured_on: str) -> list[str]:
    summary = pd.DataFrame([{"method": m, "ece": f["ece"], "ece of each query's best": f["ece_top1"],
                             "predictions": f["n_predictions"], "folds": f["folds"],
                             "map knots": len(f["map"]["scores"]),
                             "µAP": exp.stage("openset", m).meta["uap"]} for m, f in fitted.items()])
    lines = [f"# Calibrated confidence, {exp.config.augment.preset or 'reference'} preset", "",
             f"Measured: {measured_on}.", "",
             "ece: expected calibration error over 15 equal-mass bins of the probabilities each prediction got from "
             "the map fitted on the other 4 of 5 folds of queries (a seeded hash of the query id; a query's "
             "predictions all sit in one fold). Predictions: every query's top 10, copies and distractor queries "
             "pooled, as µAP counts them; most are plain non-matches at a confidence near 0, so the ece of each "
             "query's best prediction alone (where true copies are common) is given too.", "", markdown(summary), ""]
    for method, f in fitted.items():
        lines += [f"## Reliability of {method} (held-back queries)", "",
                  "Every prediction, then each query's best prediction alone:", "",
                  markdown(pd.DataFrame(f["reliability"])[COLUMNS]), "",
                  markdown(pd.DataFrame(f["reliability_top1"])[COLUMNS]), ""]
    return lines


if __name__ == "__main__":
    sys.exit(main())

"""``malle run --data DIR``: the experiment on a dataset folder, with its tables printed and written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.options import (
    add_data_option,
    add_experiment_options,
    add_force_option,
    config_from_args,
    progress_bar,
    skip_summary,
)
from malle.errors import ConfigError

if TYPE_CHECKING:
    from malle.cli.options import Say
    from malle.lab.experiment import Experiment

NAME = "run"
HELP = "run the experiment on a dataset folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_option(parser, required=True)
    add_experiment_options(parser, 200)
    add_force_option(parser)


def run(args: argparse.Namespace, say: Say) -> int:
    from malle.io import cache
    from malle.lab import published
    from malle.lab.experiment import Experiment

    config = config_from_args(args)
    # Both folders are checked before any computation, so a typo costs nothing.
    cache_root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    cache.ensure_writable_dir(args.out, "--out")
    cache.sweep_leftovers(cache_root)
    experiment = Experiment(config, cache_root, log=say)
    if not args.force:
        check_out_folder(args.out, experiment)
    results = experiment.run(progress=progress_bar)
    print(f"Data: {experiment.data_root}")
    print(f"Originals: {len(experiment.originals)} | copies: {len(experiment.manifest)} | "
          f"chain lengths: {experiment.config.augment.describe()} | seed: {args.seed}")
    print(published.format_tables(results.recall(), results.labels))
    print("\nCosts (every column in costs.csv)\n" + published.fixed_width(published.costs_summary(results.costs()),
                                                                       digits=3, index=False))
    if results.has_openset:
        print(f"\nOpen set: {len(experiment.distractor_manifest)} distractor queries next to the "
              f"{len(experiment.manifest)} copies\n(µAP: micro average precision; R@P90: recall at precision 0.9)")
        print(published.fixed_width(published.openset_summary(results.openset()), index=False))
        print("\nConfidence, calibrated on held-back queries (calibration.json; ece: expected calibration error)")
        for method, fitted in results.calibration().items():
            print(f"  {method}: ece {calibration_text(fitted)}")
    if results.has_tricks:
        print("\nMatching tricks: each derived method against its base (tricks.csv)")
        print(published.fixed_width(published.tricks_summary(results.trick_gains()), index=False))
    if len(experiment.skipped):
        print(skip_summary(experiment.skipped) + f" Reasons per file: {args.out / 'skipped.csv'}")
    written = results.write(args.out)
    print(f"Wrote {len(written)} files to {args.out}/")
    return 0


def calibration_text(fitted: dict) -> str:
    """A method's ece with what it was measured on, e.g. ``0.0012, of each query's best 0.0210 (4,210 predictions,
    5 folds by query)``."""
    ece, top1 = ("not measured" if value is None else f"{value:.4f}" for value in (fitted["ece"], fitted["ece_top1"]))
    return (f"{ece}, of each query's best {top1} ({fitted['n_predictions']:,} predictions, {fitted['folds']} folds "
            "by query)")


def check_out_folder(out: Path, experiment: Experiment) -> None:
    """A folder that holds another configuration's results (its config.json) is not overwritten: one line that
    names ``--force``. The same configuration may rewrite its own folder; a folder without config.json holds no
    finished run."""
    from malle.lab.results import configuration

    recorded = out / "config.json"
    if not recorded.is_file():
        return
    try:
        before = json.loads(recorded.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        before = {}
    now = json.loads(json.dumps(configuration(experiment), default=str))  # as config.json would record it
    changed = [key for key, value in now.items() if not isinstance(before, dict) or before.get(key) != value]
    if changed:
        raise ConfigError(f"--out {out} holds the results of another configuration (it differs in "
                          f"{', '.join(changed)}): choose another folder, or add --force to overwrite them")

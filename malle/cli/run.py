"""``malle run --data DIR``: the experiment on a dataset folder, with its tables printed and written."""

from __future__ import annotations

import argparse
from functools import partial

from tqdm.auto import tqdm

from malle.cli.options import add_data_option, add_experiment_options, config_from_args, skip_summary
from malle.io import cache
from malle.lab import published
from malle.lab.experiment import Experiment

NAME = "run"
HELP = "run the experiment on a dataset folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_option(parser, required=True)
    add_experiment_options(parser, 200)


def run(args: argparse.Namespace, say) -> int:
    config = config_from_args(args)
    # Both folders are checked before any computation, so a typo costs nothing.
    cache_root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    cache.ensure_writable_dir(args.out, "--out")
    cache.sweep_leftovers(cache_root)
    experiment = Experiment(config, cache_root, log=say)
    results = experiment.run(progress=partial(tqdm, leave=False))
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
    if results.has_tricks:
        print("\nMatching tricks: each derived method against its base (tricks.csv)")
        print(published.fixed_width(published.tricks_summary(results.trick_gains()), index=False))
    if len(experiment.skipped):
        print(skip_summary(experiment.skipped) + f" Reasons per file: {args.out / 'skipped.csv'}")
    written = results.write(args.out)
    print(f"Wrote {len(written)} files to {args.out}/")
    return 0

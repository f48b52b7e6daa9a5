"""``malle stages``: a run's stage graph, each stage's cache key and whether it is cached; computes nothing."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from malle.cli.options import add_data_option, add_experiment_options, config_from_args

if TYPE_CHECKING:
    from malle.cli.options import Say

NAME = "stages"
HELP = "the stage graph of a run: each stage's cache key and whether it is cached (computes nothing)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_option(parser, required=False)
    add_experiment_options(parser, 200)


def run(args: argparse.Namespace, say: Say) -> int:
    from malle.io import cache
    from malle.lab.experiment import Experiment

    root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    experiment = Experiment(config_from_args(args), root, log=say)
    nodes = experiment.engine.order(experiment, experiment.run_nodes(open_set=experiment.wants_distractors))
    rows = [(str(node), "cached" if experiment.engine.is_cached(experiment, node) else "to compute",
             str(experiment.engine.folder(experiment, node).relative_to(root)),
             ", ".join(map(str, experiment.engine.needs(experiment, node))) or "-") for node in nodes]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"Stages of this run, each after what it needs (cache: {root}):")
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + f"  <- {row[3]}")
    done = sum(row[1] == "cached" for row in rows)
    print(f"{done} of {len(rows)} cached" + ("" if experiment.wants_distractors else "; closed set (--distractors 0)"))
    return 0

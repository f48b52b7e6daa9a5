"""``malle severity``: robustness curves, every op alone at a grid of strengths, and where each breaks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.catalogue import OPS
from malle.cli.options import (
    add_cache_option,
    add_data_option,
    add_methods_option,
    add_precision_option,
    add_weight_options,
    config_from_args,
    names,
    progress_bar,
)

if TYPE_CHECKING:
    from malle.cli.options import Say

NAME = "severity"
HELP = "robustness curves: every op alone at a grid of strengths"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_option(parser, required=False)
    parser.add_argument("--n", type=int, default=50, help="number of originals (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-classes", type=int, default=20, help="classes taken whole before the random fill")
    parser.add_argument("--ops", type=names(OPS, "op"), default=OPS, help="ops to sweep (default: all)")
    add_methods_option(parser)
    add_weight_options(parser)
    add_precision_option(parser)
    parser.add_argument("--out", type=Path, default=Path("out"), help="folder for severity.csv (default out/)")
    add_cache_option(parser)


def run(args: argparse.Namespace, say: Say) -> int:
    from malle.io import cache
    from malle.lab.experiment import Experiment
    from malle.lab.results import rounded
    from malle.ops.severity import MIN_RECALL, breaking_points

    config = config_from_args(args)
    cache_root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    cache.ensure_writable_dir(args.out, "--out")
    experiment = Experiment(config, cache_root, log=say)
    table = experiment.severity(args.ops, progress=progress_bar)
    broken = breaking_points(table)
    cache.write_table(args.out / "severity.csv", rounded(table))
    cache.write_table(args.out / "breaking_points.csv", rounded(broken))
    print(f"Data: {experiment.data_root} | originals: {len(experiment.originals)} | seed: {args.seed} | "
          f"each op alone, Recall@1 by level")
    wide = table.pivot_table(index=["op", "level", "param"], columns="method", values="recall_at_1", sort=False)
    print(wide.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"\nBreaking points (first level with Recall@1 below {MIN_RECALL}):")
    shown = broken.assign(level=broken["level"].astype(object).where(broken["level"].notna(), "-"))
    print(shown.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.3f}"))
    print(f"Wrote severity.csv and breaking_points.csv to {args.out}/")
    return 0

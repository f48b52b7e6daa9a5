"""Headless command line: ``python -m malle run --data DIR`` and ``python -m malle demo``."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from . import report
from .augment import OPS, AugmentConfig
from .descriptors import DESCRIPTORS, WeightsUnavailable
from .experiment import Experiment, ExperimentConfig
from .sampling import DatasetError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _chain_lengths(text: str) -> tuple[int, int]:
    """``1-5`` (uniform on 1..5) or ``3`` (always 3)."""
    try:
        lo, _, hi = text.partition("-")
        bounds = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI such as 1-5, got {text!r}") from None
    if not 1 <= bounds[0] <= bounds[1] <= len(OPS):
        raise argparse.ArgumentTypeError(f"chain lengths must satisfy 1 <= LO <= HI <= {len(OPS)}")
    return bounds


def _names(valid, kind: str):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(x.strip() for x in text.split(",") if x.strip())
        unknown = [x for x in names if x not in valid]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {kind} {unknown}; choose from {', '.join(valid)}")
        return names
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m malle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the experiment on a dataset folder")
    run.add_argument("--data", required=True, type=Path,
                     help="dataset root: ROOT/<class>/<file> or a flat folder of <class>_<name> files")
    demo = sub.add_parser("demo", help="run the experiment on the built-in demo photos (ai-benchmark package)")
    for p, n_default in ((run, 200), (demo, 100)):
        p.add_argument("--n", type=int, default=n_default, help=f"number of originals (default {n_default})")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--n-classes", type=int, default=20, help="classes taken whole before the random fill")
        p.add_argument("--methods", type=_names(list(DESCRIPTORS), "method"), default=None,
                       help="comma-separated, from: " + ", ".join(DESCRIPTORS) +
                            " (default: resnet50 when its weights are available, efficientnet_lite2, phash)")
        p.add_argument("--copies", type=_int_list, default=(4, 8), help="copies per original, drawn from (4,8)")
        p.add_argument("--chain-lengths", type=_chain_lengths, default=(1, 5),
                       help="ops per copy, uniform on LO-HI (default 1-5)")
        p.add_argument("--ops", type=_names(list(OPS), "op"), default=tuple(OPS), help="ops allowed in chains")
        p.add_argument("--resnet50-weights", type=Path, default=None, help="a ResNet-50 state-dict file")
        p.add_argument("--out", type=Path, default=Path("out"), help="folder for the CSV outputs (default out/)")
        p.add_argument("--cache", type=Path, default=None, help="cache folder (default ~/.cache/malle or $MALLE_CACHE)")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig(
        data=str(args.data) if getattr(args, "data", None) else None,
        n=args.n, seed=args.seed, n_classes=args.n_classes, methods=args.methods,
        augment=AugmentConfig(copies=args.copies, chain_lengths=args.chain_lengths, ops=args.ops),
        resnet50_weights=str(args.resnet50_weights) if args.resnet50_weights else None,
    )


def _skip_summary(skipped) -> str:
    reasons = Counter(r.split(" (")[0] for r in skipped["reason"])
    detail = "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common())
    return f"Skipped {len(skipped)} file(s): {detail}."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        print("malle: error: --n must be at least 1", file=sys.stderr)
        return 2
    say = partial(print, file=sys.stderr)
    try:
        experiment = Experiment(config_from_args(args), args.cache, progress=partial(tqdm, leave=False), log=say)
        results = experiment.run()
    except WeightsUnavailable as err:
        say(str(err))
        return 2
    except (DatasetError, ValueError) as err:
        say(f"malle: error: {err}")
        return 2
    except KeyboardInterrupt:
        say("malle: interrupted; completed stages stay cached, nothing half-written is kept")
        return 130
    print(f"Data: {experiment.data_root} | originals: {len(experiment.originals)} | "
          f"copies: {len(experiment.manifest)} | chain lengths: {experiment.config.augment.describe()} | "
          f"seed: {args.seed}")
    print(report.format_tables(results.recall(), results.labels))
    costs = results.costs()
    print("\n" + costs.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if len(experiment.skipped):
        print(_skip_summary(experiment.skipped) + f" Reasons per file: {args.out / 'skipped.csv'}")
    written = results.write(args.out)
    print(f"Wrote {len(written)} files to {args.out}/")
    return 0

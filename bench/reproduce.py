"""Reproduce the 200-original experiment on real ImageNet photos.

    python bench/reproduce.py [--data ../shared/datasets/imagenet-200x5/val] [--methods efficientnet_lite2,phash]

Prints both recall tables next to the published numbers, the time per stage and
each descriptor's throughput, and writes them to bench/results/reproduce.md.
Skips cleanly (exit 0, with a message) when the dataset is absent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)

from malle.descriptors import available_methods  # noqa: E402
from malle.lab import published as report  # noqa: E402
from malle.lab.experiment import Experiment, ExperimentConfig  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "imagenet-200x5" / "val"


def markdown(df, floatfmt="{:.4f}") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(floatfmt.format(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def side_by_side(results) -> str:
    recall = results.recall()
    blocks = []
    for level in ("instance", "class"):
        measured = report.wide(recall, level, results.labels)
        published = report.wide(report.reference_recall(), level, report.REFERENCE_LABELS)
        table = measured.join(published).reset_index()
        blocks.append(f"**{level.capitalize()}-level Recall@K** (measured, then published)\n\n" + markdown(table))
    return "\n\n".join(blocks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--methods", default=None, help="comma-separated; default: every method that can run here")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", help="CNN inference: auto, fp32 or int8")
    parser.add_argument("--cache", type=Path, default=None, help="default: a fresh temp folder, so stages are timed")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "reproduce.md")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"SKIP: reproduction dataset not found at {args.data} (it lives in ../shared, outside the repo)")
        return 0
    cache_root = args.cache or Path(tempfile.mkdtemp(prefix="malle-bench-"))
    methods = tuple(args.methods.split(",")) if args.methods else tuple(available_methods())
    config = ExperimentConfig(data=str(args.data), n=args.n, seed=args.seed, methods=methods,
                              precision=args.precision)
    start = time.perf_counter()
    experiment = Experiment(config, cache_root, log=print)
    results = experiment.run(progress=partial(tqdm, leave=False))
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    Experiment(config, cache_root).run()  # a new process would do the same: every stage from the cache
    cached_s = time.perf_counter() - start

    costs = results.costs()
    timings = results.timings()
    sections = [
        f"# Reproduction benchmark\n\nData: `{args.data.name}` of imagenet-200x5 | originals: "
        f"{len(experiment.originals)} | copies: {len(experiment.manifest)} | chain lengths: "
        f"{config.augment.describe()} | seed: {args.seed}\n\nMachine: {machine()}",
        side_by_side(results),
        "**Open set** (distractor queries made from the unsampled photos; µAP as ISC2021 defines it)\n\n"
        + (markdown(results.openset(), "{:.4f}") if results.has_openset else "no distractor queries"),
        "**Which op caused the misses** (chains of two or more ops; shares of each method's misses)\n\n"
        + markdown(results.attribution().groupby("method", sort=False).head(3), "{:.3f}"),
        "**What each method is**\n\n" + markdown(results.methods_table()),
        "**Cost per method**\n\n" + markdown(costs.drop(columns=["label"]), "{:.3f}"),
        "**Time per stage** (seconds as first computed; `cached` = taken from the cache in this run)\n\n"
        + markdown(timings, "{:.1f}"),
        f"**Wall time of the whole experiment**: {first_s:.1f} s as run here "
        f"({'cold: a fresh cache' if args.cache is None else 'on the cache given'}), {cached_s:.1f} s again from the "
        "cache. `python bench/cold_run.py` compares cold runs of the default methods with an older revision.",
    ]
    publish(["\n\n".join(sections)], args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

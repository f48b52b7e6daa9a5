"""``malle index-build``: an IVF index over an embeddings folder, built in Ray tasks, lists merged on disk."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.catalogue import MIN_TRAIN, SHARDS_PER_TASK, TRAIN_PER_LIST
from malle.cli.options import progress_bar
from malle.errors import ConfigError

if TYPE_CHECKING:
    from malle.cli.options import Say

NAME = "index-build"
HELP = "build an IVF index over `malle embed` shards (on Ray with --ray), its lists on disk"


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embeddings", required=True, type=Path, help="a folder `malle embed` wrote")
    parser.add_argument("--factory", "--index", required=True, dest="factory", metavar="FACTORY",
                        help="a FAISS IVF factory string, e.g. IVF1024,PQ32 or IVF65536_HNSW32,PQ64")
    parser.add_argument("--out", required=True, type=Path, help="folder for ondisk.json, index.faiss, index.ivfdata")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="add shards in Ray tasks: HOST:PORT of `ray start --head`, auto, or local")
    parser.add_argument("--train-size", type=positive, default=None,
                        help=f"vectors to train on (default: {TRAIN_PER_LIST} per list, "
                             f"at least {MIN_TRAIN:,})")
    parser.add_argument("--shards-per-task", type=positive, default=SHARDS_PER_TASK,
                        help="embedding shards (4,096 rows each) per add task")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training sample")


def run(args: argparse.Namespace, say: Say) -> int:
    from malle.scale import ondisk

    if not args.embeddings.is_dir():
        raise ConfigError(f"--embeddings {args.embeddings} is not a folder")
    plan = ondisk.BuildPlan(args.embeddings, args.factory, args.out, args.train_size, args.shards_per_task,
                            args.seed)
    manifest = ondisk.build(plan, args.ray, progress=progress_bar, log=say)
    print(f"{manifest['factory']}: {manifest['count']:,} vectors of {manifest['method']} in {manifest['lists']:,} "
          f"lists, written to {args.out}/ ({ondisk.INDEX} + {ondisk.IVFDATA})")
    return 0

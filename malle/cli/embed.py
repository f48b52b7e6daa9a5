"""``malle embed``: a folder of images into Parquet shards of codes, here or on a Ray cluster."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.catalogue import METHODS
from malle.cli.options import add_cache_option, add_precision_option, add_weight_options, method_name, progress_bar
from malle.errors import ConfigError

if TYPE_CHECKING:
    from malle.cli.options import Say

NAME = "embed"
HELP = "embed a folder of images into Parquet shards (for --db-extra)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=str, help="folder of images (searched recursively)")
    parser.add_argument("--method", required=True, type=method_name,
                        help=f"one of {', '.join(METHODS)}, a plug-in's name, or a .toml method spec")
    parser.add_argument("--out", required=True, type=Path, help="folder for embeddings.json and the shards")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run on a Ray cluster: HOST:PORT of `ray start --head` (its token is used when it wants "
                             "one), auto, ray://HOST:10001, or local (start one on this machine)")
    add_weight_options(parser)
    add_precision_option(parser)
    add_cache_option(parser)


def run(args: argparse.Namespace, say: Say) -> int:
    from malle.descriptors import descriptor_class
    from malle.io import cache
    from malle.scale import embed_folder as embedding_job

    descriptor_class(args.method)  # a bad spec or a broken plug-in is one line before any file is looked at
    data = Path(args.data).expanduser()
    if not str(args.data).strip() or not data.is_dir():
        raise ConfigError(f"--data {args.data!r} is not a folder")
    cache.ensure_writable_dir(args.out, "--out")
    cache_root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    weights = getattr(args, f"{args.method}_weights", None)
    job = embedding_job.EmbedJob(data, args.method, args.out, args.precision, weights, cache_root)
    manifest = embedding_job.run(job, args.ray, progress=progress_bar, log=say)
    print(f"{manifest['label']}: {manifest['count']} images in {len(manifest['shards'])} shard(s) written to "
          f"{args.out}/" + (f"; {manifest['skipped']} skipped (skipped.csv)" if manifest["skipped"] else ""))
    return 0

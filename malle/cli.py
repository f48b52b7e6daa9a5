"""Headless command line.

    python -m malle run --data DIR        the experiment on a dataset folder
    python -m malle demo                  the experiment on the built-in demo photos
    python -m malle severity --data DIR   robustness curves: each op alone, level by level
    python -m malle embed --data DIR --method M --out DIR [--ray ADDRESS]   a folder into Parquet shards
    python -m malle cache info|verify|prune|clear
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from . import cache, embed, report
from .augment import OPS, REFERENCE_OPS, AugmentConfig
from .descriptors import DEFAULT_METHODS, DESCRIPTORS, weight_options
from .descriptors.cnn import PRECISIONS
from .embed import EmbedJob
from .errors import CacheError, ConfigError, MalleError
from .experiment import Experiment, ExperimentConfig
from .sampling import DEMO_DISTRACTORS, DEMO_N
from .severity import MIN_RECALL, breaking_points

SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


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


def _size(text: str) -> int:
    """``500M``, ``2G``, ``123456`` (bytes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 500M or 2G, got {text!r}")
    return int(float(match[1]) * SIZE_UNITS[match[2].upper()])


def _add_experiment_options(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument("--n", type=int, default=n_default, help=f"number of originals (default {n_default})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-classes", type=int, default=20, help="classes taken whole before the random fill")
    p.add_argument("--methods", type=_names(list(DESCRIPTORS), "method"), default=None,
                   help="comma-separated, from: " + ", ".join(DESCRIPTORS) +
                        f" (default: {', '.join(DEFAULT_METHODS)}, each when it can run here)")
    p.add_argument("--copies", type=_int_list, default=(4, 8), help="copies per original, drawn from (4,8)")
    p.add_argument("--chain-lengths", type=_chain_lengths, default=(1, 5),
                   help="ops per copy, uniform on LO-HI (default 1-5)")
    p.add_argument("--ops", type=_names(list(OPS), "op"), default=REFERENCE_OPS,
                   help="ops allowed in chains (default: the reference ten; also: " +
                        ", ".join(op for op in OPS if op not in REFERENCE_OPS) + ")")
    p.add_argument("--distractors", type=int, default=None, metavar="K",
                   help="open-set queries made from images not sampled as originals (default: as many as there are "
                        "copies, when the dataset has them; 0: closed-set only)")
    for option, cls in weight_options().items():
        p.add_argument(f"--{option}", type=str, default=None, metavar="PATH",
                       help=f"a {cls.display_name()} weights file (or ${cls.weights_env})")
    _add_precision_option(p)
    p.add_argument("--index", default="Flat", metavar="FACTORY",
                   help="FAISS index-factory string for the database, e.g. Flat (exact, default), HNSW32, "
                        "IVF1024,Flat, IVF4096_HNSW32,PQ64; or auto (chosen by database size and memory). "
                        "Only Flat is exact; others report their R@10 against exact search")
    p.add_argument("--index-params", default="", metavar="PARAMS",
                   help="search-time parameters such as efSearch=256 or nprobe=32 (default: efSearch=128; "
                        "nprobe one list in 32, at least 16)")
    p.add_argument("--db-distractors", type=int, default=0, metavar="M",
                   help="add M images of the dataset that are not sampled as originals to the database: "
                        "references no query copies (DISC21-style)")
    p.add_argument("--db-extra", default=None, metavar="DIR",
                   help="add every image of DIR to the database, or the embeddings `python -m malle embed` wrote there")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the CSV outputs (default out/)")
    _add_cache_option(p)


def _add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="CNN inference: fp32 (exact, matches PyTorch), int8 (calibrated, faster), or auto (int8 "
                        "where it keeps R@1 and the CPU has VNNI; default). Other methods keep their own precision.")


def _add_cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default ~/.cache/malle or $MALLE_CACHE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m malle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the experiment on a dataset folder")
    # A str, not a Path: Path('') is '.', which would silently run on the current folder.
    run.add_argument("--data", required=True, type=str,
                     help="dataset root: ROOT/<class>/<file> or a flat folder of <class>_<name> files")
    _add_experiment_options(run, 200)
    demo = sub.add_parser("demo", help="run the experiment on the built-in demo photos (ai-benchmark package)")
    _add_experiment_options(demo, DEMO_N)
    demo.set_defaults(distractors=DEMO_DISTRACTORS)
    severity = sub.add_parser("severity", help="robustness curves: every op alone at a grid of strengths")
    severity.add_argument("--data", default=None, type=str, help="dataset folder (default: the built-in demo photos)")
    severity.add_argument("--n", type=int, default=50, help="number of originals (default 50)")
    severity.add_argument("--seed", type=int, default=0)
    severity.add_argument("--n-classes", type=int, default=20, help="classes taken whole before the random fill")
    severity.add_argument("--ops", type=_names(list(OPS), "op"), default=tuple(OPS), help="ops to sweep (default: all)")
    severity.add_argument("--methods", type=_names(list(DESCRIPTORS), "method"), default=None,
                          help=f"comma-separated (default: {', '.join(DEFAULT_METHODS)}, each when it can run here)")
    for option, cls in weight_options().items():
        severity.add_argument(f"--{option}", type=str, default=None, metavar="PATH",
                              help=f"a {cls.display_name()} weights file")
    _add_precision_option(severity)
    severity.add_argument("--out", type=Path, default=Path("out"), help="folder for severity.csv (default out/)")
    _add_cache_option(severity)
    embed = sub.add_parser("embed", help="embed a folder of images into Parquet shards (for --db-extra)")
    embed.add_argument("--data", required=True, type=str, help="folder of images (searched recursively)")
    embed.add_argument("--method", required=True, choices=list(DESCRIPTORS))
    embed.add_argument("--out", required=True, type=Path, help="folder for embeddings.json and the shards")
    embed.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run on a Ray cluster: auto, ray://HOST:10001, or local (start one on this machine)")
    for option, cls in weight_options().items():
        embed.add_argument(f"--{option}", type=str, default=None, metavar="PATH",
                           help=f"a {cls.display_name()} weights file")
    _add_precision_option(embed)
    _add_cache_option(embed)
    cache_cmd = sub.add_parser("cache", help="inspect and clean the cache")
    actions = cache_cmd.add_subparsers(dest="action", required=True)
    for name, text in (("info", "size and entries per stage"), ("verify", "check every entry against its digests"),
                       ("prune", "remove damaged entries and leftovers of killed runs"),
                       ("clear", "remove every entry")):
        action = actions.add_parser(name, help=text)
        _add_cache_option(action)
        if name == "prune":
            action.add_argument("--max-size", type=_size, default=None,
                                help="then remove least recently used entries until the cache fits, e.g. 5G")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    weights = {cls.name: getattr(args, option.replace("-", "_")) for option, cls in weight_options().items()}
    chains = {} if args.command == "severity" else {
        "augment": AugmentConfig(copies=args.copies, chain_lengths=args.chain_lengths, ops=args.ops),
        "distractors": args.distractors, "index": args.index, "index_params": args.index_params,
        "db_distractors": args.db_distractors, "db_extra": args.db_extra}
    return ExperimentConfig(
        data=args.data if args.command in ("run", "severity") else None,
        n=args.n, seed=args.seed, n_classes=args.n_classes, methods=args.methods, precision=args.precision,
        weights={method: path for method, path in weights.items() if path}, **chains,
    )


def _skip_summary(skipped) -> str:
    reasons = Counter(r.split(" (")[0] for r in skipped["reason"])
    detail = "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common())
    return f"Skipped {len(skipped)} file(s): {detail}."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = partial(print, file=sys.stderr)
    try:
        if args.command == "cache":
            return cache_command(args)
        if args.command == "severity":
            return severity_command(args, say)
        if args.command == "embed":
            return embed_command(args, say)
        return run_command(args, say)
    except MalleError as err:
        say(f"malle: error: {err}")
        return 2
    except KeyboardInterrupt:
        say("malle: interrupted; completed stages stay cached, nothing half-written is kept")
        return 130


def run_command(args: argparse.Namespace, say) -> int:
    config = config_from_args(args)
    # Both folders are checked before any computation, so a typo costs nothing.
    cache_root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    cache.ensure_writable_dir(args.out, "--out")
    cache.sweep_leftovers(cache_root)
    experiment = Experiment(config, cache_root, log=say)
    results = experiment.run(progress=partial(tqdm, leave=False))
    print(f"Data: {experiment.data_root} | originals: {len(experiment.originals)} | "
          f"copies: {len(experiment.manifest)} | chain lengths: {experiment.config.augment.describe()} | "
          f"seed: {args.seed}")
    print(report.format_tables(results.recall(), results.labels))
    costs = results.costs()
    print("\n" + costs.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if results.has_openset:
        print(f"\nOpen set: {len(experiment.distractor_manifest)} distractor queries next to the "
              f"{len(experiment.manifest)} copies (micro average precision, recall at precision 0.9)")
        print(results.openset().to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if len(experiment.skipped):
        print(_skip_summary(experiment.skipped) + f" Reasons per file: {args.out / 'skipped.csv'}")
    written = results.write(args.out)
    print(f"Wrote {len(written)} files to {args.out}/")
    return 0


def severity_command(args: argparse.Namespace, say) -> int:
    config = config_from_args(args)
    cache_root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    cache.ensure_writable_dir(args.out, "--out")
    experiment = Experiment(config, cache_root, log=say)
    table = experiment.severity(args.ops, progress=partial(tqdm, leave=False))
    broken = breaking_points(table)
    cache.write_table(args.out / "severity.csv", table)
    cache.write_table(args.out / "breaking_points.csv", broken)
    print(f"Data: {experiment.data_root} | originals: {len(experiment.originals)} | seed: {args.seed} | "
          f"each op alone, Recall@1 by level")
    wide = table.pivot_table(index=["op", "level", "param"], columns="method", values="recall_at_1", sort=False)
    print(wide.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"\nBreaking points (first level with Recall@1 below {MIN_RECALL}):")
    shown = broken.assign(level=broken["level"].astype(object).where(broken["level"].notna(), "-"))
    print(shown.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.3f}"))
    print(f"Wrote severity.csv and breaking_points.csv to {args.out}/")
    return 0


def embed_command(args: argparse.Namespace, say) -> int:
    data = Path(args.data).expanduser()
    if not str(args.data).strip() or not data.is_dir():
        raise ConfigError(f"--data {args.data!r} is not a folder")
    cache.ensure_writable_dir(args.out, "--out")
    cache_root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    weights = getattr(args, f"{args.method}_weights", None)
    job = EmbedJob(data, args.method, args.out, args.precision, weights, cache_root)
    manifest = embed.run(job, args.ray, progress=partial(tqdm, leave=False), log=say)
    print(f"{manifest['label']}: {manifest['count']} images in {len(manifest['shards'])} shard(s) written to "
          f"{args.out}/" + (f"; {manifest['skipped']} skipped (skipped.csv)" if manifest["skipped"] else ""))
    return 0


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def cache_command(args: argparse.Namespace) -> int:
    root = Path(args.cache or cache.default_root()).expanduser()
    if root.exists() and not root.is_dir():
        raise CacheError(f"--cache {root} is a file, not a folder")
    if args.action == "info":
        table = cache.info(root)
        print(f"Cache: {root}")
        if table.empty:
            print("(empty)")
            return 0
        print(table.assign(size=table["bytes"].map(_mb)).drop(columns="bytes").to_string(index=False))
        print(f"Total: {_mb(cache.total_bytes(root))}")
        return 0
    if args.action == "verify":
        entries = cache.entries(root)
        damaged = [(e, p) for e in entries if (p := cache.problem_with(e.folder)) is not None]
        for entry, problem in damaged:
            print(f"{entry.name}: {problem}")
        print(f"{len(entries)} entries verified, {len(damaged)} damaged"
              + (" (each is rebuilt on its next use; `cache prune` removes them now)" if damaged else ""))
        return 1 if damaged else 0
    removed = cache.prune(root, args.max_size) if args.action == "prune" else cache.clear(root)
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} removed; the cache now holds {_mb(cache.total_bytes(root))}")
    return 0

"""Argument types and option groups shared by the subcommands, and the experiment config they describe.

Building the parser imports nothing heavy: the names and defaults the options offer come from
``malle.cli.catalogue``, and what needs the registries (the config, a spec's check) is imported when a command
runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.catalogue import (
    DEFAULT_METHODS,
    DEFAULT_SCORE_NORM,
    ENGINES,
    METHODS,
    METRICS,
    OPS,
    PLUGIN_GROUP,
    PRECISIONS,
    PRESETS,
    REFERENCE_OPS,
    SPEC_SUFFIX,
    WEIGHT_OPTIONS,
)
from malle.errors import ConfigError
from malle.tricks import methods as trick_methods

if TYPE_CHECKING:
    import pandas as pd
    from tqdm import tqdm

    from malle.lab.experiment import ExperimentConfig
    from malle.ops import AugmentConfig

SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
Say = Callable[[str], None]  # where a command writes its notices and one-line errors (stderr)
BAR_COLUMNS = 100  # a progress bar's whole line, so a long description shortens the bar, never wraps the line
DETAILS = re.compile(r"\s*\([^()]*\)")  # a label's parenthesised details: "pHash (64-bit)" -> "pHash"


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def chain_lengths(text: str) -> tuple[int, int]:
    """``1-5`` (uniform on 1..5) or ``3`` (always 3)."""
    try:
        lo, _, hi = text.partition("-")
        bounds = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI such as 1-5, got {text!r}") from None
    if not 1 <= bounds[0] <= bounds[1] <= len(OPS):
        raise argparse.ArgumentTypeError(f"chain lengths must satisfy 1 <= LO <= HI <= {len(OPS)}")
    return bounds


def names(valid: Sequence[str], kind: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        found = tuple(x.strip() for x in text.split(",") if x.strip())
        unknown = [x for x in found if x not in valid]
        if unknown or not found:
            raise argparse.ArgumentTypeError(f"unknown {kind} {unknown}; choose from {', '.join(valid)}")
        return found
    return parse


def method_name(text: str) -> str:
    """A built-in or plug-in method's name, or the path of a .toml method spec (read when the run starts), with
    matching-trick suffixes such as ``+norm`` (``malle.tricks.methods``), canonicalised. Whether a plug-in or a
    spec works, and takes suffixes, is checked when the command runs (``resolve_methods``)."""
    try:
        parsed = trick_methods.parse(text.strip())
        if parsed.base in METRICS:
            trick_methods.check_float(parsed, METRICS[parsed.base])
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not is_method_name(parsed.base):
        raise argparse.ArgumentTypeError(f"unknown method {text.strip()!r}; choose from {', '.join(METHODS)}, "
                                         "a plug-in's name (`malle methods` lists them) or a .toml method spec, "
                                         f"each optionally with suffixes {', '.join(trick_methods.TRICKS)}")
    return parsed.name


def is_method_name(name: str) -> bool:
    """Built in, a spec file's path, or a plug-in's entry-point name (found without importing the plug-in)."""
    return (name in METHODS or name.lower().endswith(SPEC_SUFFIX)
            or name in importlib.metadata.entry_points(group=PLUGIN_GROUP).names)


def method_names(text: str) -> tuple[str, ...]:
    found = tuple(method_name(x) for x in text.split(",") if x.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"no method given; choose from {', '.join(METHODS)}")
    return found


def size(text: str) -> int:
    """``500M``, ``2G``, ``123456`` (bytes)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 500M or 2G, got {text!r}")
    return int(float(match[1]) * SIZE_UNITS[match[2].upper()])


def add_methods_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=method_names, default=None,
                   help="comma-separated, from: " + ", ".join(METHODS) + ", a plug-in's name, or the path of "
                        "a .toml spec of an ONNX model (`malle methods` lists them all); a float method takes "
                        "matching tricks as suffixes, e.g. sscd_distilled+norm, +regions, +verify (README)" +
                        f" (default: {', '.join(DEFAULT_METHODS)}, each when it can run here)")


def add_weight_options(p: argparse.ArgumentParser) -> None:
    for option, weights in WEIGHT_OPTIONS.items():
        p.add_argument(f"--{option}", type=str, default=None, metavar="PATH",
                       help=f"a {weights.label} weights file (or ${weights.env})")


def add_experiment_options(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument("--n", type=int, default=n_default, help=f"number of originals (default {n_default})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-classes", type=int, default=20, help="classes taken whole before the random fill")
    add_methods_option(p)
    p.add_argument("--copies", type=int_list, default=(4, 8), help="copies per original, drawn from (4,8)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="chain distribution: " + "; ".join(f"{name}: {text}" for name, text in PRESETS.items()) +
                        " (default: reference; --ops and --chain-lengths override the preset's)")
    p.add_argument("--chain-lengths", type=chain_lengths, default=None,
                   help="ops per copy, uniform on LO-HI (default: the preset's, 1-5 for reference)")
    p.add_argument("--ops", type=names(OPS, "op"), default=None,
                   help="ops allowed in chains (default: the preset's, the reference ten for reference; also: " +
                        ", ".join(op for op in OPS if op not in REFERENCE_OPS) + ")")
    p.add_argument("--distractors", type=int, default=None, metavar="K",
                   help="open-set queries made from images not sampled as originals (default: as many as there are "
                        "copies, when the dataset has them; 0: closed-set only)")
    add_weight_options(p)
    add_precision_option(p)
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
    p.add_argument("--background", default=None, metavar="DIR",
                   help="the background set of METHOD+norm: a folder of images that holds no original, copy or "
                        "database image (default: unused images of the dataset, held apart)")
    p.add_argument("--score-norm", default=DEFAULT_SCORE_NORM, metavar="BETA[FIRST,LAST]",
                   help="what METHOD+norm subtracts, in SSCD's syntax: beta times the mean similarity of the "
                        "query's background neighbours FIRST..LAST (zero-based, inclusive); default "
                        f"{DEFAULT_SCORE_NORM}, SSCD's published setting. Choose another on data apart from the "
                        "evaluation set")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the CSV outputs (default out/)")
    add_cache_option(p)


def add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="network inference (CNNs, SSCD and its student): fp32 (exact), bf16 (OpenVINO), int8 "
                        "(calibrated), or auto (default: the fastest path measured on this CPU kind to keep R@1 "
                        "within 0.005 of fp32, malle/inference/choices.toml; else fp32). A graph shipped in int8 "
                        "keeps it.")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="what runs the networks: onnxruntime, openvino, or auto (default: per model and CPU, as "
                        "--precision auto chooses; ONNX Runtime for an explicit fp32 or int8)")


def add_cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default ~/.cache/malle or $MALLE_CACHE)")


def add_data_option(p: argparse.ArgumentParser, required: bool) -> None:
    # A str, not a Path: Path('') is '.', which would silently run on the current folder.
    if required:
        p.add_argument("--data", required=True, type=str,
                       help="dataset root: ROOT/<class>/<file> or a flat folder of <class>_<name> files")
    else:
        p.add_argument("--data", default=None, type=str, help="dataset folder (default: the built-in demo photos)")


def weights_from_args(args: argparse.Namespace) -> dict[str, str]:
    """Method -> weights file, for the ``--<method>-weights`` options given."""
    given = {w.method: getattr(args, option.replace("-", "_"), None) for option, w in WEIGHT_OPTIONS.items()}
    return {method: path for method, path in given.items() if path}


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment the options describe; commands without chain options (severity) keep the defaults."""
    from malle.lab.experiment import ExperimentConfig

    weights = weights_from_args(args)
    chains = {} if not hasattr(args, "chain_lengths") else {
        "augment": augment_from_args(args),
        "distractors": args.distractors, "index": args.index, "index_params": args.index_params,
        "db_distractors": args.db_distractors, "db_extra": args.db_extra, "background": args.background,
        "score_norm": args.score_norm}
    return ExperimentConfig(
        data=getattr(args, "data", None),
        n=args.n, seed=args.seed, n_classes=args.n_classes, methods=args.methods, precision=args.precision,
        engine=getattr(args, "engine", "auto"),
        weights=tuple(weights.items()), **chains,
    )


def augment_from_args(args: argparse.Namespace) -> AugmentConfig:
    """The preset's chain distribution (reference when none is named), with ``--ops`` and ``--chain-lengths`` in
    place of its own where given."""
    from malle.ops import get_preset

    return get_preset(args.preset or "reference").augment(args.copies, args.ops, args.chain_lengths)


def skip_summary(skipped: pd.DataFrame) -> str:
    reasons = Counter(r.split(" (")[0] for r in skipped["reason"])
    detail = "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common())
    return f"Skipped {len(skipped)} file(s): {detail}."


def progress_bar(total: int | None = None, desc: str = "", **kwargs: object) -> tqdm:
    """The commands' progress bar (``Progress`` of ``malle.lab.stages.base``): ``BAR_COLUMNS`` wide, gone when
    done, described by the method's short name; the full label is in the results."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=DETAILS.sub("", desc), ncols=BAR_COLUMNS, leave=False, **kwargs)


def add_force_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="write into --out even when it holds the results of another configuration")

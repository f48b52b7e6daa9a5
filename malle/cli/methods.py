"""``malle methods [SPEC.toml ...]``: every method this installation knows, and whether it can run here.

Lists the built-in methods, the plug-ins (entry-point group ``malle.descriptors``), the spec files
given and those in the dashboard's methods folder, each with its family, label and availability,
and says why when one cannot run. Exits 1 when a spec given on the command line is bad, so the
command also checks a spec before a long run.

``--prepare`` then readies the default methods that can run here in the cache (``$MALLE_CACHE``): exported to ONNX
and their digests taken, once per installation. The README's install line runs it, so that a stakeholder's first
dashboard screen does not wait for an export (seconds of PyTorch on a 2-core machine) that installing could do.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.catalogue import METHODS_DIR_ENV
from malle.cli.options import add_weight_options, weights_from_args

if TYPE_CHECKING:
    from malle.cli.options import Say
    from malle.descriptors.registry import MethodInfo

NAME = "methods"
HELP = "list the built-in, plug-in and spec (.toml) methods, and why any cannot run here"
COLUMNS = ("method", "source", "family", "available", "label")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="*", metavar="SPEC.toml",
                        help=f"method specs to check (those in ${METHODS_DIR_ENV}, by default "
                             "~/.config/malle/methods, which the dashboard offers, are listed too)")
    parser.add_argument("--prepare", action="store_true",
                        help="then export and check the default methods that can run here, into the cache "
                             "($MALLE_CACHE), so the first run or dashboard screen does not wait for it")
    add_weight_options(parser)


def run(args: argparse.Namespace, say: Say) -> int:
    from malle.descriptors.registry import folder_specs, list_methods, methods_folder

    given = [Path(p) for p in args.specs]
    seen = {p.expanduser().resolve() for p in given}
    folder = [p for p in folder_specs() if p.resolve() not in seen]
    found = list_methods([*given, *folder], weights_from_args(args))
    print(format_table(found))
    problems = [info for info in found if info.problem]
    if problems:
        print("\nWhy not available:")
        for info in problems:
            print(f"  {info.method} ({info.source}): {info.problem}")
    if not folder_specs():
        print(f"\nNo method specs in {methods_folder()} (set ${METHODS_DIR_ENV} to offer specs in the dashboard).")
    bad_given = {str(p) for p in given} & {info.source for info in problems}
    if args.prepare:
        prepare([info.method for info in found if info.source == "built-in" and not info.problem],
                weights_from_args(args))
    return 1 if bad_given else 0


def prepare(available: list[str], weights: dict[str, str]) -> None:
    """Load each default method among ``available`` against the cache, as a run would (``Experiment.check``)."""
    from malle.descriptors.registry import DEFAULT_METHODS, create_descriptor
    from malle.io.cache import default_root

    root = default_root()
    print(f"\nPreparing the default methods in {root}:")
    for method in (m for m in DEFAULT_METHODS if m in available):
        start = time.perf_counter()
        desc = create_descriptor(method, weights.get(method))
        desc.use_cache(root)
        desc.load()
        print(f"  {method}: {desc.runtime()} ({time.perf_counter() - start:.1f} s)")
        for notice in desc.notices:
            print(f"    {notice}")


def format_table(found: list[MethodInfo]) -> str:
    rows = [COLUMNS] + [(i.method, i.source, i.family, "no" if i.problem else "yes", i.label) for i in found]
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)

"""``malle methods [SPEC.toml ...]``: every method this installation knows, and whether it can run here.

Lists the built-in methods, the plug-ins (entry-point group ``malle.descriptors``), the spec files
given and those in the dashboard's methods folder, each with its family, label and availability,
and says why when one cannot run. Exits 1 when a spec given on the command line is bad, so the
command also checks a spec before a long run.
"""

from __future__ import annotations

import argparse
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
    return 1 if bad_given else 0


def format_table(found: list[MethodInfo]) -> str:
    rows = [COLUMNS] + [(i.method, i.source, i.family, "no" if i.problem else "yes", i.label) for i in found]
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)

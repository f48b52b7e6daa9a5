"""``malle cache info|verify|prune|clear``: inspect and clean the stage cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.options import add_cache_option, size
from malle.errors import CacheError

if TYPE_CHECKING:
    from malle.cli.options import Say

NAME = "cache"
HELP = "inspect and clean the cache"
ACTIONS = (("info", "size and entries per stage"), ("verify", "check every entry against its digests"),
           ("prune", "remove damaged entries and leftovers of killed runs"), ("clear", "remove every entry"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in ACTIONS:
        action = actions.add_parser(name, help=text)
        add_cache_option(action)
        if name == "prune":
            action.add_argument("--max-size", type=size, default=None,
                                help="then remove least recently used entries until the cache fits, e.g. 5G")


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def run(args: argparse.Namespace, say: Say) -> int:
    from malle.io import cache

    root = Path(args.cache or cache.default_root()).expanduser()
    if root.exists() and not root.is_dir():
        raise CacheError(f"--cache {root} is a file, not a folder")
    if args.action == "info":
        return _info(root)
    if args.action == "verify":
        return _verify(root)
    removed = cache.prune(root, args.max_size) if args.action == "prune" else cache.clear(root)
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} removed; the cache now holds {_mb(cache.total_bytes(root))}")
    return 0


def _info(root: Path) -> int:
    from malle.io import cache

    table = cache.info(root)
    print(f"Cache: {root}")
    if table.empty:
        print("(empty)")
        return 0
    print(table.assign(size=table["bytes"].map(_mb)).drop(columns="bytes").to_string(index=False))
    print(f"Total: {_mb(cache.total_bytes(root))}")
    return 0


def _verify(root: Path) -> int:
    from malle.io import cache

    entries = cache.entries(root)
    damaged = [(e, p) for e in entries if (p := cache.problem_with(e.folder)) is not None]
    for entry, problem in damaged:
        print(f"{entry.name}: {problem}")
    print(f"{len(entries)} entries verified, {len(damaged)} damaged"
          + (" (each is rebuilt on its next use; `cache prune` removes them now)" if damaged else ""))
    return 1 if damaged else 0

"""``malle dedup DIR --out OUT``: the modified copies inside one folder, grouped around a centre image.

Writes ``groups.csv`` (group, path, score: one row per member of a group of two or more, the centre first)
and ``groups.html`` (a self-contained contact sheet), plus ``skipped.csv`` when files were unusable. How
groups avoid chaining unrelated images: ``malle.dedup.folder``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.catalogue import DEDUP_PREFERENCE
from malle.cli.options import add_cache_option, method_name, progress_bar, skip_summary
from malle.errors import ConfigError

if TYPE_CHECKING:
    from malle.cli.options import Say

NAME = "dedup"
HELP = "find the modified copies inside one folder (groups.csv and a contact sheet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=str, metavar="DIR", help="folder of images (searched recursively)")
    parser.add_argument("--method", type=method_name, default=None,
                        help=f"default: the first of {', '.join(DEDUP_PREFERENCE)} that runs here")
    parser.add_argument("--threshold", type=float, default=None,
                        help="in the method's unit (cosine similarity; Hamming bits for hashes); default: the strict "
                             "threshold calibrated on the reproduction run (no false match there)")
    parser.add_argument("--out", required=True, type=Path, help="folder for groups.csv and groups.html")
    add_cache_option(parser)


def run(args: argparse.Namespace, say: Say) -> int:
    from malle.bank import sheet
    from malle.dedup import folder as dedup
    from malle.io import cache
    from malle.lab.results import rounded

    folder = Path(args.folder).expanduser()
    if not str(args.folder).strip() or not folder.is_dir():
        raise ConfigError(f"{args.folder!r} is not a folder")
    out = cache.ensure_writable_dir(args.out, "--out")
    cache_root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    found = dedup.find_copies(folder, args.method, args.threshold, cache_root, progress=progress_bar)
    cache.write_table(out / "groups.csv", rounded(found.groups))
    title = f"Copies in {folder} ({found.label}, {found.score_name} threshold {found.threshold:g})"
    sheet.write(out / "groups.html", folder, found.groups, title, found.score_name)
    if len(found.skipped):
        cache.write_table(out / "skipped.csv", found.skipped)
        say(skip_summary(found.skipped) + f" Reasons per file: {out / 'skipped.csv'}")
    n_groups = found.groups["group"].nunique()
    print(f"{found.label}, threshold {found.threshold:g}: {found.n_images} images, {n_groups} group(s) holding "
          f"{len(found.groups)} images; wrote {out / 'groups.csv'} and {out / 'groups.html'}")
    return 0

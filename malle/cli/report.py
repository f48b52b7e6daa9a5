"""``malle report OUT``: a finished run's folder as one self-contained HTML file and a PDF of it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from malle.cli.options import add_cache_option, progress_bar
from malle.errors import import_extra

if TYPE_CHECKING:
    from malle.cli.options import Say

NAME = "report"
HELP = "a run's folder as one self-contained HTML report (and a PDF of it) for stakeholders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT",
                        help="the folder `malle run/demo --out OUT` wrote (and `malle severity --out OUT`)")
    parser.add_argument("--html", type=Path, default=None, metavar="FILE", help="default: OUT/report.html")
    parser.add_argument("--pdf", type=Path, default=None, metavar="FILE",
                        help="also print a PDF (needs Chromium and Playwright)")
    add_cache_option(parser)
    parser.description = ("The failure gallery's images come from the cache that made the run (--cache, "
                          "default $MALLE_CACHE or ~/.cache/malle), else from its dataset folder (each copy re-made "
                          "from its recorded edits), else the gallery lists the misses alone.")


def run(args: argparse.Namespace, say: Say) -> int:
    start = time.perf_counter()
    import_extra("altair", "malle report")  # the charts: one line naming the extra before any work
    from malle.io import cache
    from malle.report import DOWNSCALED, RunFolder, build, print_pdf, reopen

    folder = RunFolder.open(args.out)  # a one-line error before anything else when OUT is not a run
    html_path = args.html or folder.path / "report.html"
    images, why = reopen(folder, args.cache or cache.default_root())
    if images is None:
        say(f"malle report: gallery without images: {why}")
    elif why:
        say(f"malle report: {why}; gallery images from {images.origin}")
    with progress_bar(total=100, desc="report") as bar:
        def progress(what: str, share: float) -> None:
            bar.set_description(f"report: {what}")
            bar.update(round(share * 100) - bar.n)
        report = build(folder.path, images, why, progress)
    cache.write_bytes(html_path, report.html.encode("utf-8"))
    print(f"Wrote {html_path} ({report.size / 2**20:.2f} MB; downscaled: {DOWNSCALED})")
    if report.absent:
        print(f"Left out (nothing in this run): {', '.join(report.absent)}")
    if args.pdf is not None:
        data = print_pdf(report.html, args.pdf)
        print(f"Wrote {args.pdf} ({len(data) / 2**20:.2f} MB)")
    print(f"Report built in {time.perf_counter() - start:.1f} s")
    return 0

"""``malle hash FILES... --method M``: the code of each image, as ``lookup`` and hash lists take it.

    malle hash photo.jpg scans/ --method pdq          # path<TAB>64 hex characters, one line per image
    malle hash photo.jpg --method sscd_distilled      # path<TAB>base64 of 512 float32 values

The image is decoded and encoded exactly as the bank does it (reduced on load past the bank's pixel budget,
the same precision), so ``POST /v1/collections/{name}/lookup`` with these codes gives the same matches as
``match`` with the images, and the images need not leave this machine. Files that cannot be used are named
on standard error with their reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from malle.cli.options import add_cache_option, method_name, skip_summary

NAME = "hash"
HELP = "print each image's code (PDQ hex, embeddings base64) for lookups and hash lists"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="image files or folders")
    parser.add_argument("--method", required=True, type=method_name, help="the collection's method")
    parser.add_argument("--precision", default="fp32",
                        help="CNN inference precision, as the collection's (default fp32, a collection's default)")
    add_cache_option(parser)


def run(args: argparse.Namespace, say) -> int:
    import pandas as pd

    from malle.bank.bank import decode, load_descriptor
    from malle.bank.codes import to_text
    from malle.cli.bank import query_files
    from malle.errors import BadImage
    from malle.io import cache

    root = cache.ensure_writable_dir(args.cache or cache.default_root(), "--cache")
    desc = load_descriptor(args.method, args.precision, root, say)
    files, skipped = query_files(args.files)
    hashed = 0
    for path in files:
        try:
            code = desc.encode([decode(path)])[0]
        except BadImage as err:
            skipped.append({"path": str(path), "reason": str(err)})
            continue
        print(f"{path}\t{to_text(code)}", flush=True)
        hashed += 1
    if skipped:
        say(skip_summary(pd.DataFrame(skipped, columns=["path", "reason"])))
        for row in skipped:
            say(f"  skipped {row['path']}: {row['reason']}")
    return 0 if hashed else 1

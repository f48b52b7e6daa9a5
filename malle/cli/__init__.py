"""Headless command line: one module per subcommand, registered in ``COMMANDS``.

A subcommand module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args, say) -> int``;
adding one is a new module and one line in ``COMMANDS``. ``python -m malle`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from malle import __version__
from malle.cli import (
    bank,
    cache_cmd,
    dashboard,
    dedup,
    demo,
    embed,
    index_build,
    methods,
    report,
    run,
    serve,
    severity,
    stages,
)
from malle.cli import hash as hash_cmd
from malle.errors import MalleError

USAGE = """Find modified copies of images and measure how well each method finds them.

    malle run --data DIR        the experiment on a dataset folder
    malle demo                  the experiment on the built-in demo photos
    malle severity --data DIR   robustness curves: each op alone, level by level
    malle embed --data DIR --method M --out DIR [--ray ADDRESS]   a folder into Parquet shards
    malle index-build --embeddings DIR --factory IVF1024,PQ32 --out DIR [--ray ADDRESS]   lists on disk
    malle cache info|verify|prune|clear
    malle bank create|add|remove|match|info|verify BANK ...   banks of reference images
    malle serve --bank BANK     the bank's REST API (OpenAPI at /docs)
    malle hash FILE... --method M   each image's code, for lookups and hash lists
    malle dedup DIR --out OUT   the modified copies inside one folder
    malle stages [run options]  the stage graph: each stage's cache key and whether it is cached
    malle methods [SPEC.toml ...]   every method (built-in, plug-in, ONNX spec) and whether it runs here
    malle report OUT [--html FILE] [--pdf FILE]   a run's folder as a self-contained HTML report and PDF
    malle dashboard [--server.port N]   the Streamlit dashboard (a checkout), its worker pool started first
"""

COMMANDS = (
    run,
    demo,
    severity,
    embed,
    index_build,
    cache_cmd,
    bank,
    serve,
    hash_cmd,
    dedup,
    stages,
    methods,
    report,
    dashboard,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="malle", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command = next(c for c in COMMANDS if c.NAME == args.command)
    if unknown and not getattr(command, "PASSES_ON_OPTIONS", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.passed_on = unknown  # a command that hands its options to another program (``malle dashboard``)
    say = partial(print, file=sys.stderr)
    try:
        return command.run(args, say)
    except MalleError as err:
        say(f"malle: error: {err}")
        return 2
    except KeyboardInterrupt:
        say("malle: interrupted; completed stages stay cached, nothing half-written is kept")
        return 130

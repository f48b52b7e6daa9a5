"""Headless command line: one module per subcommand, registered in ``COMMANDS``.

A subcommand module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args, say) -> int``;
adding one is a new module and one line in ``COMMANDS``. ``python -m malle`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from ..errors import MalleError
from . import cache_cmd, demo, embed, methods, run, severity

USAGE = """Find modified copies of images and measure how well each method finds them.

    malle run --data DIR        the experiment on a dataset folder
    malle demo                  the experiment on the built-in demo photos
    malle severity --data DIR   robustness curves: each op alone, level by level
    malle embed --data DIR --method M --out DIR [--ray ADDRESS]   a folder into Parquet shards
    malle cache info|verify|prune|clear
    malle methods [SPEC.toml ...]   every method (built-in, plug-in, ONNX spec) and whether it runs here
"""

COMMANDS = (
    run,
    demo,
    severity,
    embed,
    cache_cmd,
    methods,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="malle", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = partial(print, file=sys.stderr)
    command = next(c for c in COMMANDS if c.NAME == args.command)
    try:
        return command.run(args, say)
    except MalleError as err:
        say(f"malle: error: {err}")
        return 2
    except KeyboardInterrupt:
        say("malle: interrupted; completed stages stay cached, nothing half-written is kept")
        return 130

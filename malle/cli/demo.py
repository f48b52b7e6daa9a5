"""``malle demo``: the experiment on the built-in demo photos (the ai-benchmark package)."""

from __future__ import annotations

import argparse

from malle.cli import run as run_command
from malle.cli.catalogue import DEMO_DISTRACTORS, DEMO_N
from malle.cli.options import add_experiment_options, add_force_option

NAME = "demo"
HELP = "run the experiment on the built-in demo photos (ai-benchmark package)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_options(parser, DEMO_N)
    add_force_option(parser)
    parser.set_defaults(distractors=DEMO_DISTRACTORS)


run = run_command.run

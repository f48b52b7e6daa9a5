"""``malle demo``: the experiment on the built-in demo photos (the ai-benchmark package)."""

from __future__ import annotations

import argparse

from ..sampling import DEMO_DISTRACTORS, DEMO_N
from . import run as run_command
from .options import add_experiment_options

NAME = "demo"
HELP = "run the experiment on the built-in demo photos (ai-benchmark package)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_options(parser, DEMO_N)
    parser.set_defaults(distractors=DEMO_DISTRACTORS)


run = run_command.run

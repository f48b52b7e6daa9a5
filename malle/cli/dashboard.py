"""``malle dashboard [STREAMLIT OPTIONS] [-- APP OPTIONS]``: the Streamlit dashboard, with its worker pool started
before the server.

The same app as ``streamlit run streamlit_app.py`` (run from the checkout it lives in, so the project's
``.streamlit/config.toml`` applies: loopback only, no source watching), but the pool's fork server starts first,
in this process, which then becomes the Streamlit server. Its imports (PyTorch and torchvision for the ops: about
7 s of one core on a 2-core machine) then run while Streamlit starts and the browser connects, instead of from the
moment the first page's script starts: on the first Overview of a fresh demo, the copies wait for them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from malle.errors import ConfigError

if TYPE_CHECKING:
    from malle.cli.options import Say

NAME = "dashboard"
HELP = "the Streamlit dashboard on loopback, its worker pool started with the server (a checkout of Malle)"
PASSES_ON_OPTIONS = True  # every option malle does not know goes to streamlit run (``args.passed_on``)
APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"  # the router, beside the package in a checkout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Other options go to streamlit run (e.g. --server.port 8502), and after -- to the app itself "
                     "(e.g. -- --resnet50-weights PATH).")


def run(args: argparse.Namespace, say: Say) -> int:
    if not APP.is_file():
        raise ConfigError(f"malle dashboard runs from a checkout of Malle; {APP} is not there "
                          "(git clone the repository and pip install -e '.[all]' in it)")
    from malle import parallel
    from malle.errors import import_extra

    cli = import_extra("streamlit.web.cli", "malle dashboard")
    parallel.start()  # the fork server's imports run on the other core while Streamlit starts
    os.chdir(APP.parent)  # the project's .streamlit/config.toml is read from the working directory
    sys.argv = ["streamlit", "run", str(APP), *getattr(args, "passed_on", [])]
    cli.main()  # Click's entry point: serves until interrupted, then exits the process itself
    return 0

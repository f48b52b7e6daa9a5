"""``malle serve --bank BANK``: the bank's REST API on uvicorn (``malle.service``), OpenAPI at /docs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from malle.bank import Bank
from malle.cli.options import add_cache_option
from malle.errors import ConfigError
from malle.service.guard import API_KEY_ENV, check_exposure, load_key

NAME = "serve"
HELP = "serve a bank over HTTP (REST API, OpenAPI at /docs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bank", required=True, type=Path, help="bank folder (a new folder becomes an empty bank)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs an API key)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key-file", default=None, metavar="FILE",
                        help=f"file whose first line is the API key (or ${API_KEY_ENV}); checked on every request")
    parser.add_argument("--max-upload-mb", type=int, default=32, help="largest accepted image upload (default 32)")
    add_cache_option(parser)


def run(args: argparse.Namespace, say) -> int:
    import faiss
    import uvicorn

    from malle.service.app import create_app

    key = load_key(args.api_key_file)
    check_exposure(args.host, key)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port")
    if args.max_upload_mb < 1:
        raise ConfigError("--max-upload-mb must be at least 1")
    # Requests run in parallel on the thread pool, so each search takes one thread: FAISS's OpenMP team per
    # single-query search spins against the other requests (10k x 512 flat: 60 ms with 2 threads under load,
    # 4.8 ms with one, on this project's 2-core machine).
    faiss.omp_set_num_threads(1)
    bank = Bank.open(args.bank, log=say, model_cache=args.cache)
    for coll in bank.collections():  # load every method now: the first request should not wait, or fail, on it
        bank.descriptor(coll.method, coll.precision)
        bank.snapshots.current(coll)
    app = create_app(bank, key, args.max_upload_mb * 2**20)
    say(f"Malle: serving bank {args.bank} ({len(bank.collections())} collection(s)) at "
        f"http://{args.host}:{args.port} (API docs at /docs)" + (", API key required" if key else ""))
    sys.stderr.flush()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        bank.close()
    return 0

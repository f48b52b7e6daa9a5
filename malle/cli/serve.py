"""``malle serve --bank BANK``: the bank's REST API on uvicorn (``malle.service``), OpenAPI at /docs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from malle.cli.options import add_cache_option
from malle.errors import EXTRAS, ConfigError, WeightsUnavailable, import_extra
from malle.service.guard import API_KEY_ENV, check_exposure, is_loopback, load_key

NAME = "serve"
HELP = "serve a bank over HTTP (REST API, OpenAPI at /docs)"
EXPOSED_RATE = 20.0  # requests a second per key when the server is reachable beyond this machine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bank", required=True, type=Path, help="bank folder (a new folder becomes an empty bank)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs an API key)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--api-key-file", default=None, metavar="FILE",
                        help=f"file whose first line is the API key (or ${API_KEY_ENV}); checked on every request")
    parser.add_argument("--max-upload-mb", type=int, default=32, help="largest accepted image upload (default 32)")
    parser.add_argument("--rate", type=float, default=None, metavar="PER_SECOND",
                        help=f"requests a second per API key, in bursts of twice that; beyond it 429 with "
                             f"Retry-After (default: off on loopback, {EXPOSED_RATE:g} on any other address; 0: off)")
    parser.add_argument("--max-in-flight", type=int, default=64,
                        help="requests handled at once; beyond it 503 with Retry-After (default 64)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="let browser pages from ORIGIN (e.g. https://app.example.org) call the API; repeatable "
                             "(default: none, so no cross-origin access)")
    add_cache_option(parser)


def run(args: argparse.Namespace, say) -> int:
    for module in EXTRAS["service"]:  # one line naming the extra when a base install lacks it
        import_extra(module, "malle serve")
    import faiss
    import uvicorn

    from malle.bank import Bank
    from malle.service.app import create_app
    from malle.service.flood import configure_logging, return_freed_memory

    key = load_key(args.api_key_file)
    check_exposure(args.host, key)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port")
    if args.max_upload_mb < 1:
        raise ConfigError("--max-upload-mb must be at least 1")
    rate = rate_for(args.rate, args.host)
    if args.max_in_flight < 1:
        raise ConfigError("--max-in-flight must be at least 1")
    # Requests run in parallel on the thread pool, so each search takes one thread: FAISS's OpenMP team per
    # single-query search spins against the other requests (10k x 512 flat: 60 ms with 2 threads under load,
    # 4.8 ms with one, on this project's 2-core machine).
    faiss.omp_set_num_threads(1)
    return_freed_memory()  # a burst of large uploads must not leave the server larger for good
    bank = Bank.open(args.bank, log=say, model_cache=args.cache)
    for coll in bank.collections():  # load every method now: the first request should not wait, or fail, on it
        try:
            bank.descriptor(coll.method, coll.precision)
        except WeightsUnavailable as err:
            say(f"Malle: collection {coll.name!r}: {err}; its adds and matches will be refused")
            continue
        bank.snapshots.current(coll)
    app = create_app(bank, key, args.max_upload_mb * 2**20, rate=rate, max_in_flight=args.max_in_flight,
                     cors_origins=args.cors_origin)
    configure_logging()
    say(f"Malle: serving bank {args.bank} ({len(bank.collections())} collection(s)) at "
        f"http://{args.host}:{args.port} (API docs at /docs)" + (", API key required" if key else "")
        + (f", {rate:g} requests/s per key" if rate else ""))
    sys.stderr.flush()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        bank.close()
    return 0


def rate_for(given: float | None, host: str) -> float | None:
    """``--rate`` as given (0: off), else off on loopback and ``EXPOSED_RATE`` beyond it."""
    if given is None:
        return None if is_loopback(host) else EXPOSED_RATE
    if given < 0 or given != given or given == float("inf"):
        raise ConfigError("--rate must be a number of requests a second, 0 for no limit")
    return given or None

"""``malle serve --bank BANK``: the bank's REST API on uvicorn (``malle.service``), OpenAPI at /docs."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from malle.cli.options import add_cache_option
from malle.errors import EXTRAS, ConfigError, import_extra
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
    parser.add_argument("--workers", type=int, default=1,
                        help="processes serving the bank, each on the same address and the same index files; a "
                             "worker that dies is replaced while the others answer (default 1)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="serve as Ray Serve replicas on an existing Ray cluster: HOST:PORT of `ray start --head` "
                             "(its token is used when it wants one), auto or ray://HOST:10001; --bank must then be "
                             "an absolute path every node can read, and writes go through one writer replica")
    parser.add_argument("--replicas", type=int, default=None,
                        help="with --ray: matcher replicas, each reserving one CPU of the cluster, as the writer does "
                             "(default 1)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="matches arriving together are encoded in one pass of up to this many images (default "
                             "1: each alone, on its own thread, which was faster on a 2-core fp32 CPU; try 8 where a "
                             "batch runs faster than its images one by one)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0,
                        help="how long a pass waits for matches still decoding, only when some are (default 5)")
    add_cache_option(parser)


def run(args: argparse.Namespace, say) -> int:
    for module in EXTRAS["service"]:  # one line naming the extra when a base install lacks it
        import_extra(module, "malle serve")
    import uvicorn

    from malle.service.batching import check_options
    from malle.service.flood import configure_logging
    from malle.service.workers import UVICORN_OPTIONS, ServeOptions, build_app, check_workers, open_bank, run_workers

    key = load_key(args.api_key_file)
    check_exposure(args.host, key)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port")
    if args.max_upload_mb < 1:
        raise ConfigError("--max-upload-mb must be at least 1")
    rate = rate_for(args.rate, args.host)
    if args.max_in_flight < 1:
        raise ConfigError("--max-in-flight must be at least 1")
    check_options(args.batch_size, args.batch_wait_ms)
    options = ServeOptions(str(args.bank), str(args.cache) if args.cache else None, args.max_upload_mb * 2**20, rate,
                           args.max_in_flight, tuple(args.cors_origin), args.batch_size, args.batch_wait_ms,
                           check_workers(args.workers))
    if args.ray is not None or args.replicas is not None:
        return _run_on_ray(args, options, key, say)
    if args.workers > 1:  # each worker loads the methods and maps the indexes itself; this process only watches
        from malle.bank import Bank

        with contextlib.closing(Bank.open(args.bank, log=say)) as bank:  # a folder that is no bank fails here, once
            _announce(args, key, rate, len(bank.collections()), say)
        return run_workers(options, key, args.host, args.port, say)
    bank = open_bank(options, say)
    _announce(args, key, rate, len(bank.collections()), say)
    app = build_app(options, bank, key)
    configure_logging()
    try:
        uvicorn.run(app, host=args.host, port=args.port, **UVICORN_OPTIONS)
    finally:
        bank.close()
    return 0


def _run_on_ray(args: argparse.Namespace, options, key: str | None, say) -> int:
    from dataclasses import replace

    from malle.service.ray_serve import check_replicas, run_on_ray

    if args.ray is None:
        raise ConfigError("--replicas needs --ray ADDRESS (processes on this machine: --workers)")
    if args.workers > 1:
        raise ConfigError("--workers and --ray are exclusive: on Ray, --replicas sets how many serve")
    replicas = check_replicas(1 if args.replicas is None else args.replicas)
    options = replace(options, workers=replicas)  # --rate is shared by the replicas as it is by workers
    return run_on_ray(options, key, args.ray, args.host, args.port, say)


def _announce(args: argparse.Namespace, key: str | None, rate: float | None, collections: int, say) -> None:
    say(f"Malle: serving bank {args.bank} ({collections} collection(s)) at http://{args.host}:{args.port} (API docs "
        "at /docs)" + (", API key required" if key else "") + (f", {rate:g} requests/s per key" if rate else "")
        + (f", {args.workers} worker processes" if args.workers > 1 else ""))
    sys.stderr.flush()


def rate_for(given: float | None, host: str) -> float | None:
    """``--rate`` as given (0: off), else off on loopback and ``EXPOSED_RATE`` beyond it."""
    if given is None:
        return None if is_loopback(host) else EXPOSED_RATE
    if given < 0 or given != given or given == float("inf"):
        raise ConfigError("--rate must be a number of requests a second, 0 for no limit")
    return given or None

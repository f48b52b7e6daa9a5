"""How ``malle serve`` starts: one process, or ``--workers N`` processes over one bank (issue 26, item 2).

With N workers, uvicorn binds the address once and starts N processes that accept on the same socket; a worker
that dies (even by kill -9) is replaced, and the others go on answering meanwhile (uvicorn 0.30 and later). Each
worker opens the bank itself from the options handed to it in ``$MALLE_SERVE_WORKER`` (JSON; the API key travels
as ``$MALLE_API_KEY``, never in that JSON):

* writes stay serialised and durable as in one process: every add or remove is one SQLite transaction in WAL mode
  under the bank's file lock (``malle.bank.store``), committed with ``synchronous=FULL`` before its answer, so a
  worker killed at any point loses nothing it acknowledged;
* every worker sees every committed write at once (its matches score the database's changes since its snapshot)
  and maps the same snapshot files read-only (``malle.bank.snapshots``), so the index's pages are in memory once;
* ``--rate`` stays a limit for the whole server: each worker lets a key through at ``rate / N``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from malle.errors import ConfigError, WeightsUnavailable

OPTIONS_ENV = "MALLE_SERVE_WORKER"
MAX_WORKERS = 64
HEALTHCHECK_S = 60  # uvicorn replaces a worker that does not answer its ping for this long (a model may be loading)
FOLLOW_EVERY_S = 1.0  # how often a worker looks for a snapshot another process published


@dataclass(frozen=True)
class ServeOptions:
    """What every worker needs to build the same app (all plain values, so they travel as JSON)."""

    bank: str
    cache: str | None
    max_upload_bytes: int
    rate: float | None
    max_in_flight: int
    cors_origins: tuple[str, ...]
    batch_size: int
    batch_wait_ms: float
    workers: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        values = json.loads(text)
        return cls(**{**values, "cors_origins": tuple(values["cors_origins"])})


def check_workers(workers: int) -> int:
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be from 1 to {MAX_WORKERS} (got {workers})")
    return workers


def open_bank(options: ServeOptions, say: Callable[[str], None]):
    """The bank with every collection's method and snapshot loaded, so the first request neither waits nor fails
    on them; a method that cannot run here is said once and its collection's adds and matches are refused."""
    import faiss

    from malle.bank import Bank
    from malle.service.flood import return_freed_memory

    # Requests run in parallel on the thread pool, so each search takes one thread: FAISS's OpenMP team per
    # single-query search spins against the other requests (10k x 512 flat: 60 ms with 2 threads under load,
    # 4.8 ms with one, on this project's 2-core machine).
    faiss.omp_set_num_threads(1)
    return_freed_memory()  # a burst of large uploads must not leave the server larger for good
    bank = Bank.open(options.bank, log=say, model_cache=Path(options.cache) if options.cache else None)
    for coll in bank.collections():
        try:
            bank.descriptor(coll.method, coll.precision)
        except WeightsUnavailable as err:
            say(f"Malle: collection {coll.name!r}: {err}; its adds and matches will be refused")
            continue
        bank.snapshots.current(coll)
    return bank


def build_app(options: ServeOptions, bank, key: str | None, on_shutdown: Callable[[], None] | None = None):
    from malle.service.app import create_app

    rate = options.rate / options.workers if options.rate else None
    return create_app(bank, key, options.max_upload_bytes, rate=rate, max_in_flight=options.max_in_flight,
                      cors_origins=options.cors_origins, batch_size=options.batch_size,
                      batch_wait_ms=options.batch_wait_ms, on_shutdown=on_shutdown)


def worker_app():
    """The app of one worker process: uvicorn calls this (``factory=True``) in every worker it starts."""
    import sys

    from malle.service.flood import configure_logging
    from malle.service.guard import load_key

    options = ServeOptions.from_json(os.environ[OPTIONS_ENV])
    configure_logging()

    def say(message: str) -> None:
        print(f"[worker {os.getpid()}] {message}", file=sys.stderr, flush=True)

    bank = open_bank(options, say)
    stop = threading.Event()
    threading.Thread(target=follow_snapshots, args=(bank, stop), name="follow-snapshots", daemon=True).start()

    def shutdown() -> None:  # a worker ends when its server does
        stop.set()
        bank.close()

    app = build_app(options, bank, load_key(None), on_shutdown=shutdown)
    say("Malle: ready to serve")
    return app


def follow_snapshots(bank, stop: threading.Event, every_s: float = FOLLOW_EVERY_S) -> None:
    """Take up, every ``every_s``, each snapshot another worker (or any process) published: whichever process
    rebuilt an index, every worker then maps the same file, and the one it mapped before is let go."""
    while not stop.wait(every_s):
        bank.snapshots.follow()


def run_workers(options: ServeOptions, key: str | None, host: str, port: int) -> None:
    """Serve with ``options.workers`` processes until SIGTERM or SIGINT."""
    import uvicorn

    from malle.service.guard import API_KEY_ENV

    os.environ[OPTIONS_ENV] = options.to_json()
    if key is not None:
        os.environ[API_KEY_ENV] = key  # inherited by the workers only: this process serves nothing
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=options.workers, host=host, port=port,
                log_level="warning", access_log=False, timeout_worker_healthcheck=HEALTHCHECK_S)

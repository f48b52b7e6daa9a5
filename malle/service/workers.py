"""How ``malle serve`` starts: one process, or ``--workers N`` processes over one bank (issue 26, item 2).

With N workers this process binds the address once, imports what the workers run (PyTorch, ONNX Runtime, FAISS,
the app), and forks N workers, each listening on its own socket bound to that address with ``SO_REUSEPORT``, so the
kernel spreads connections evenly over them (on one shared socket, one worker took most connections: issue 26's
bench). The imports' memory is therefore one copy, shared
by every worker until one writes to it; each worker then loads its own methods and maps the bank's snapshot files.
This process only watches: a worker that dies, even by kill -9, is replaced by a new fork while the others go on
answering. SIGTERM or SIGINT stops every worker (each finishes its requests in flight) and then this process.

* Writes stay serialised and durable as in one process: every add or remove is one SQLite transaction in WAL mode
  under the bank's file lock (``malle.bank.store``), committed with ``synchronous=FULL`` before its answer, so a
  worker killed at any point loses nothing it acknowledged.
* Every worker sees every committed write at once (its matches score the database's changes since its snapshot),
  maps the same snapshot files read-only (``malle.bank.snapshots``), so the index's pages are in memory once, and
  takes up each snapshot another process publishes (``Snapshots.follow``, every ``FOLLOW_EVERY_S``).
* ``--rate`` stays a limit for the whole server: each worker lets a key through at ``rate / N``; ``--max-in-flight``
  is per worker.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from malle.errors import ConfigError, MalleError, WeightsUnavailable

if TYPE_CHECKING:
    from malle.bank import Bank

# How every malle serve process runs uvicorn. The HTTP parser is named: uvicorn picks httptools when it is
# installed (Ray Serve brings it) and h11 otherwise, and the two answer some malformed requests differently
# (a control character in a header: httptools refuses the request in plain text before the app sees it); h11
# hands it to the app, which answers as tests/test_service_hardening.py expects, whatever else is installed.
UVICORN_OPTIONS: dict[str, Any] = {"log_level": "warning", "access_log": False, "http": "h11"}


MAX_WORKERS = 64
FOLLOW_EVERY_S = 1.0  # how often a worker looks for a snapshot another process published
STOP_TIMEOUT_S = 60  # a worker still running this long after SIGTERM is killed
STARTUP_FAILED = 3  # a worker's exit status when it could not open the bank: starting another would fail the same way


@dataclass(frozen=True)
class ServeOptions:
    """What every worker needs to build the same app."""

    bank: str
    cache: str | None
    max_upload_bytes: int
    rate: float | None
    max_in_flight: int
    cors_origins: tuple[str, ...]
    batch_size: int
    batch_wait_ms: float
    workers: int = 1


def check_workers(workers: int) -> int:
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be from 1 to {MAX_WORKERS} (got {workers})")
    return workers


def open_bank(options: ServeOptions, say: Callable[[str], None], kind: type[Bank] | None = None):
    """The bank (a ``kind``, by default ``Bank``) with every collection's method and snapshot loaded, so the first
    request neither waits nor fails on them; a method that cannot run here is said once and its collection's adds
    and matches are refused."""
    import faiss

    from malle.bank import Bank
    from malle.service.flood import return_freed_memory

    # Requests run in parallel on the thread pool, so each search takes one thread: FAISS's OpenMP team per
    # single-query search spins against the other requests (10k x 512 flat: 60 ms with 2 threads under load,
    # 4.8 ms with one, on this project's 2-core machine).
    faiss.omp_set_num_threads(1)
    return_freed_memory()  # a burst of large uploads must not leave the server larger for good
    bank = (kind or Bank).open(options.bank, log=say, model_cache=Path(options.cache) if options.cache else None)
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


def follow_snapshots(bank, stop: threading.Event, every_s: float = FOLLOW_EVERY_S) -> None:
    """Take up, every ``every_s``, each snapshot another worker (or any process) published: whichever process
    rebuilt an index, every worker then maps the same file, and the one it mapped before is let go."""
    while not stop.wait(every_s):
        bank.snapshots.follow()


def say_as_worker(message: str) -> None:
    print(f"[worker {os.getpid()}] {message}", file=sys.stderr, flush=True)


def serve_worker(options: ServeOptions, key: str | None, address: tuple) -> int:
    """One worker's life, in the forked child: open the bank, serve on its own socket at ``address`` until told to
    stop."""
    import uvicorn

    from malle.service.flood import configure_logging

    for sig in (signal.SIGTERM, signal.SIGINT):  # the watcher's handlers are not the worker's: uvicorn sets its own
        signal.signal(sig, signal.SIG_DFL)
    configure_logging()
    try:
        bank = open_bank(options, say_as_worker)
    except MalleError as err:
        say_as_worker(f"Malle: {err}")
        return STARTUP_FAILED
    stop = threading.Event()
    threading.Thread(target=follow_snapshots, args=(bank, stop), name="follow-snapshots", daemon=True).start()

    def shutdown() -> None:  # a worker ends when its server does
        stop.set()
        bank.close()

    app = build_app(options, bank, key, on_shutdown=shutdown)
    say_as_worker("Malle: ready to serve")
    with listening(address) as sock:
        uvicorn.Server(uvicorn.Config(app, **UVICORN_OPTIONS)).run(sockets=[sock])
    return 0


def shared_port(address: tuple) -> socket.socket:
    """A socket bound to ``address`` with ``SO_REUSEPORT``: bound alone it holds the port for the workers' sockets,
    and listening it is one of them."""
    family, kind, proto, _, where = address
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(where)
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot bind {where[0]}:{where[1]} ({err.strerror or err})") from None
    return sock


def listening(address: tuple) -> socket.socket:
    sock = shared_port(address)
    sock.listen(2048)
    return sock


class Watcher:
    """Forks the workers and keeps ``options.workers`` of them running until SIGTERM or SIGINT."""

    def __init__(self, options: ServeOptions, key: str | None, address: tuple, say: Callable[[str], None]) -> None:
        self.options, self.key, self.address, self.say = options, key, address, say
        self.workers: set[int] = set()
        self.stopping = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        gc.freeze()  # what was imported stays in pages the workers share: the collector never writes to them
        for _ in range(self.options.workers):
            self._fork()
        status = 0
        while self.workers:
            pid, code = self._reap()
            if pid is None:
                continue
            if self.stopping:
                continue
            if code == STARTUP_FAILED:
                self.say("Malle: a worker could not open the bank; stopping")
                self._stop()
                status = 1
                continue
            self.say(f"Malle: worker {pid} ended ({_reason(code)}); starting another")
            self._fork()
        return status

    def _fork(self) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the watcher's code
            code = 1
            try:
                code = serve_worker(self.options, self.key, self.address)
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.workers.add(pid)

    def _reap(self) -> tuple[int | None, int]:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            self.workers.clear()
            return None, 0
        if pid == 0:
            time.sleep(0.2)
            return None, 0
        self.workers.discard(pid)
        return pid, status

    def _stop(self, *_signal) -> None:
        if self.stopping:
            return
        self.stopping = True
        for pid in self.workers:
            _signal_quietly(pid, signal.SIGTERM)
        timer = threading.Timer(STOP_TIMEOUT_S, self._kill_the_rest)
        timer.daemon = True
        timer.start()

    def _kill_the_rest(self) -> None:
        for pid in list(self.workers):
            _signal_quietly(pid, signal.SIGKILL)


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it ended meanwhile


def _reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def run_workers(options: ServeOptions, key: str | None, host: str, port: int, say: Callable[[str], None]) -> int:
    """Serve with ``options.workers`` forked processes until SIGTERM or SIGINT."""
    import onnxruntime  # noqa: F401  (imported once here, so every worker shares it; the app likewise)
    import uvicorn  # noqa: F401

    import malle.service.app  # noqa: F401

    address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with shared_port(address):  # held, not listened on, while the watcher runs: the port stays the server's
        say(f"Malle: {options.workers} workers listening on {host}:{port}")
        return Watcher(options, key, address, say).run()

"""Work spread over the machine's cores, with results in the order asked: the same bytes as one process.

``ordered_map(fn, items)`` runs ``fn(item)`` for each item in a pool of worker processes and yields the
results in the items' order, whatever order the workers finish in. Callers make each item's work depend on
the item alone (its own seeded generator, its own output files), so the output is byte-identical to a
serial run; ``tests/test_parallel.py`` checks that for copies, distractors and attribution.

Processes, not threads: the ops are Python and NumPy as much as Pillow, and threads would queue on the GIL.
Workers come from a fork server that has imported the ops once, so a worker starts in milliseconds and
never inherits the threads of its parent (ONNX Runtime's, Streamlit's), which ``fork`` would copy half-held.
The pool is the parallelism: each worker gives PyTorch (whose kernels some ops run) only its share of the
cores, since every worker taking them all made the demo's copies 2.7x slower on 2 cores (torchvision's
Gaussian blur, a depthwise convolution, competed for the other worker's core).
One pool per process, started on first use and reused by every stage. Its workers end with the process that
owns the pool, even one killed with ``kill -9`` (``_end_with``): else they and the fork server live on.

``$MALLE_WORKERS`` sets the number of workers (1: everything in this process, nothing is spawned);
by default one per core this process may run on.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import select
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

from malle.errors import ConfigError

WORKERS_ENV = "MALLE_WORKERS"
WORKER_THREADS_ENV = "OMP_NUM_THREADS"  # a worker's share of the cores, for the OpenMP runtimes it loads
# What the fork server imports once, so each worker starts with the ops and the cache ready.
# The ops import torchvision only where an op runs (the dashboard's own process never needs it), so it is named
# here: the fork server imports it once, on a core of its own, rather than every worker on its first copy.
PRELOAD = ("malle.ops", "malle.io.cache", "malle.io.images", "torchvision.transforms.v2.functional")

T = TypeVar("T")
R = TypeVar("R")

_pools: dict[int, ProcessPoolExecutor] = {}
_guard = threading.Lock()


def worker_count() -> int:
    """``$MALLE_WORKERS`` when set, else the cores this process may run on."""
    given = os.environ.get(WORKERS_ENV, "").strip()
    if not given:
        return _cores()
    if not given.isdigit() or int(given) < 1:
        raise ConfigError(f"${WORKERS_ENV} must be a whole number of at least 1, got {given!r}")
    return int(given)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """``fn(item)`` for each item, yielded in the items' order.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one) and so must the
    items and results. With one worker, or one item, it runs here, one item at a time.
    """
    items = list(items)
    count = worker_count() if workers is None else workers
    if count <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with _guard, _script_main_hidden():
        pool = _pool(count)
        futures: list[Future] = [pool.submit(fn, item) for item in items]  # a submit may start a worker
    try:
        for future in futures:
            yield future.result()
    finally:
        # A caller that stops early (an error, a closed generator) leaves no queued work behind.
        for future in futures:
            future.cancel()


def in_worker(fn: Callable[..., R], *args: object) -> R:
    """``fn(*args)`` in one of the pool's workers, waiting for its result (here, with one worker).

    For work that needs modules the fork server has imported and this process has not: a model's export needs
    PyTorch, which the workers hold from the fork server and which the dashboard's process never imports
    otherwise (seconds of CPU that both cores are busy without)."""
    count = worker_count()
    if count <= 1:
        return fn(*args)
    with _guard, _script_main_hidden():
        future = _pool(count).submit(_under_environ, dict(os.environ), fn, args)
    return future.result()


def _under_environ(environ: dict[str, str], fn: Callable[..., R], args: tuple) -> R:
    """``fn(*args)`` under the caller's environment, as it would run in the caller: a worker has the environment
    of the moment its fork server started, and a variable set since (``TORCH_HOME``: where PyTorch's weights are
    cached) would otherwise not reach it. The worker keeps its own share of the cores; it runs one job at a time,
    so setting and restoring its environment affects nothing else."""
    own = dict(os.environ)
    os.environ.clear()
    os.environ.update({**environ, **{key: own[key] for key in (WORKER_THREADS_ENV,) if key in own}})
    try:
        return fn(*args)
    finally:
        os.environ.clear()
        os.environ.update(own)


def start(workers: int | None = None) -> None:
    """Launch the pool's fork server now, without waiting for it: it imports the ops (``PRELOAD``: seconds, they
    import PyTorch) on a core of its own while this process does something else, and the work sent later forks
    workers from a server that is ready. Nothing to do with one worker."""
    count = worker_count() if workers is None else workers
    if count <= 1:
        return
    with _guard, _script_main_hidden():
        _pool(count)
        multiprocessing.forkserver.ensure_running()  # spawns the server and returns; its imports run meanwhile


def _pool(workers: int) -> ProcessPoolExecutor:
    pool = _pools.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
        pool = _pools[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                     initializer=_start_worker,
                                                     initargs=(_core_share(workers), os.getpid()))
    return pool


def _core_share(workers: int) -> int:
    """The threads each of ``workers`` may compute on: the cores split evenly, at least one."""
    return max(1, _cores() // workers)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker(threads: int, owner: int) -> None:
    """Worker initializer: compute on this worker's share of the cores, and end with the pool's owner."""
    _share_cores(threads)
    _end_with(owner)


def _end_with(owner: int) -> None:
    """End this worker when process ``owner`` ends, however it ends.

    A killed owner leaves no EOF for anyone to see: multiprocessing hands every child the write end of the fork
    server's "alive" pipe and of the task queue, so the workers wait for work forever and keep the fork server
    (which exits when that pipe closes) alive too: about 1.7 GB held for good here. A daemon thread waits on a
    pidfd of the owner (polls it where there is none) and exits the worker at once; when the last worker is
    gone, the fork server sees its pipe close and exits too."""
    try:
        watched = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd (not Linux 5.3+): poll
        watched = None

    def wait_for_owner() -> None:
        if watched is not None:
            select.select([watched], [], [])
        else:
            while _alive(owner):
                time.sleep(1.0)
        os._exit(0)  # nothing of the owner's is left to hand results to; exit without running its clean-ups

    threading.Thread(target=wait_for_owner, name="malle-owner-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _share_cores(threads: int) -> None:
    """Worker initializer: PyTorch (imported with the ops by the fork server) computes on this worker's share
    of the cores, and so does any OpenMP runtime loaded later in the worker. The thread count changes no byte:
    tests/test_parallel.py compares the workers' copies with one process's."""
    os.environ[WORKER_THREADS_ENV] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _script_main_hidden() -> Iterator[None]:
    """While workers start: a ``__main__`` that is a script run by path (Streamlit puts the app there) is
    hidden, since a new worker would run that script again to rebuild its ``__main__``; the work sent to
    workers never lives in ``__main__``. A module run with ``-m`` (the CLI, pytest) has a spec and stays."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or not getattr(main, "__file__", None):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main

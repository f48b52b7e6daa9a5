"""``malle serve --bank BANK --ray ADDRESS --replicas N``: the bank's API as Ray Serve replicas (issue 26, item 4).

The driver connects to an existing cluster as ``malle embed --ray`` does (``malle.scale.ray_cluster``: token
authentication included), starts Serve's HTTP proxy on ``--host``/``--port`` and deploys one application of two
deployments:

* ``MalleMatcher``, N replicas, the ingress: each builds the very app ``malle serve`` runs
  (``malle.service.app.create_app`` through ``serve.ingress``; same routes, key rule, errors and limits) over its
  own ``RelayedBank``, which reads the bank folder directly (matches, lookups, listings, thumbnails) and takes up
  the snapshots another process publishes, as ``--workers`` processes do (``workers.follow_snapshots``);
* ``MalleWriter``, one replica: every write (adding or removing an item, creating or deleting a collection) is
  forwarded to it through a ``DeploymentHandle``, so SQLite and the codes file have one writer whatever N is, and
  it rebuilds the snapshots its writes make due; the matchers see each committed write at once through the
  database's delta and map its snapshots once published.

The bank folder must be an absolute path every node can read (a shared file system when the cluster has several
machines): the replicas open it there. The proxy listens on 127.0.0.1 unless ``--host`` says otherwise, and any
other address needs the API key exactly as ``malle serve`` does (checked before anything starts); a Serve already
running on the cluster with another address is refused rather than reused. The driver stays attached: SIGINT or
SIGTERM deletes the application, and Serve itself when no other application runs on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pydoc
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from starlette.exceptions import HTTPException

from malle.bank import Bank
from malle.errors import ConfigError, MalleError, MissingExtra, import_extra
from malle.io import cache
from malle.scale.ray_cluster import connect
from malle.service.workers import ServeOptions, build_app, follow_snapshots, open_bank

APP_NAME = "malle"
MAX_REPLICAS = 64
Opened = TypeVar("Opened", bound=Bank)
WRITE_TIMEOUT_S = 600  # a write waits for the writer at most this long (adding an image encodes it there)


def check_replicas(replicas: int) -> int:
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError(f"--replicas must be from 1 to {MAX_REPLICAS} (got {replicas})")
    return replicas


def check_bank_path(folder: str | Path) -> str:
    """The bank folder as every replica opens it: absolute (a relative path would be read against each replica's
    working directory) and readable here."""
    path = Path(folder)
    if not path.is_absolute():
        raise ConfigError(f"--bank {folder}: with --ray the bank must be an absolute path that every node of the "
                          "cluster can read (e.g. on a shared file system)")
    if path.exists() and not (path.is_dir() and os.access(path, os.R_OK | os.X_OK)):
        raise ConfigError(f"--bank {folder}: not a folder this process can read")
    return str(path)


def import_serve():
    """``ray.serve``, or one ``MissingExtra`` line: Ray without its Serve dependencies (grpc, ...) is the ray extra
    half-installed."""
    import_extra("ray", "malle serve --ray")
    try:
        import ray.serve
    except ModuleNotFoundError as err:
        raise MissingExtra(f"malle serve --ray needs Ray Serve, which is missing {err.name!r} here: "
                           "pip install 'malle[ray]'") from None
    return ray.serve


def say_as_replica(message: str) -> None:
    print(f"[replica {os.getpid()}] {message}", file=sys.stderr, flush=True)


# -- the replicas ---------------------------------------------------------------------------------------------------
class RelayedBank(Bank):
    """A bank that reads its folder itself and hands every write to the writer deployment."""

    writer: Any = None  # the writer's DeploymentHandle, set once the replica has opened the bank

    def create_collection(self, name: str, method: str, threshold: float | None = None,
                          threshold_from: str | Path | None = None, index: str = "Flat",
                          precision: str = "fp32", precision_target: float | None = None):
        return self._relay(self.writer.create_collection.remote(name, method, threshold, threshold_from, index,
                                                                precision, precision_target))

    def delete_collection(self, name: str) -> None:
        self._relay(self.writer.delete_collection.remote(name))

    def add_bytes(self, name: str, data: bytes, filename: str, metadata=None):
        return self._relay(self.writer.add_bytes.remote(name, data, filename, metadata))

    def remove(self, name: str, item_id: int):
        return self._relay(self.writer.remove.remote(name, item_id))

    @staticmethod
    def _relay(response):
        """The writer's answer; an error a user caused (a ``MalleError``) as itself, so it keeps its 4xx; a writer
        that died with the write in flight (Serve starts another) a 503 to retry, since nothing was acknowledged.
        Anything else stays Ray's error, with the writer's traceback."""
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return response.result(timeout_s=WRITE_TIMEOUT_S)
        except RayTaskError as err:
            if isinstance(err.cause, MalleError):
                raise err.cause from None
            raise
        except RayActorError:
            raise HTTPException(503, "the bank's writer is being restarted: send the write again",
                                headers={"Retry-After": "1"}) from None


class Writer:
    """The one replica that writes: the bank's own methods, called by the matchers through a handle."""

    def __init__(self, options: ServeOptions) -> None:
        self.bank, self.stop = open_followed(options, Bank)

    def create_collection(self, *args):
        return self.bank.create_collection(*args)

    def delete_collection(self, name: str) -> None:
        self.bank.delete_collection(name)

    def add_bytes(self, name: str, data: bytes, filename: str, metadata):
        return self.bank.add_bytes(name, data, filename, metadata)

    def remove(self, name: str, item_id: int):
        return self.bank.remove(name, item_id)

    def __del__(self) -> None:  # Serve calls it when it stops the replica; a constructor that failed set nothing
        stop = getattr(self, "stop", None)
        if stop is not None:
            stop()


class Matcher:
    """One ingress replica: ``malle serve``'s app over a ``RelayedBank`` (Serve calls ``__serve_build_asgi_app__``
    after ``__init__`` and runs the app's lifespan, whose end closes the bank)."""

    def __init__(self, options: ServeOptions, key: str | None, writer) -> None:
        self.options, self.key = options, key
        self.bank, self.stop = open_followed(options, RelayedBank)
        self.bank.writer = writer

    def __serve_build_asgi_app__(self):
        return build_app(self.options, self.bank, self.key, on_shutdown=self.stop)


def open_followed(options: ServeOptions, kind: type[Opened]) -> tuple[Opened, Callable[[], None]]:
    """The bank opened as a ``--workers`` worker opens it, following the snapshots others publish; and what closes
    it. A folder this replica's node cannot read is a one-line error in the deployment's status."""
    check_bank_path(options.bank)
    if not Path(options.bank).is_dir():
        raise ConfigError(f"--bank {options.bank}: not a folder on this node ({os.uname().nodename})")
    bank = open_bank(options, say_as_replica, kind)
    stop = threading.Event()
    threading.Thread(target=follow_snapshots, args=(bank, stop), name="follow-snapshots", daemon=True).start()

    def close() -> None:
        if not stop.is_set():
            stop.set()
            bank.close()

    return bank, close


# -- the driver ---------------------------------------------------------------------------------------------------
def application(serve, options: ServeOptions, key: str | None, replicas: int):
    """The bound application: ``replicas`` matchers, each holding a handle to the one writer. Each replica reserves
    one CPU of the cluster."""
    writer = serve.deployment(Writer, name="MalleWriter", num_replicas=1, ray_actor_options={"num_cpus": 1})
    matcher = serve.deployment(serve.ingress()(Matcher), name="MalleMatcher", num_replicas=replicas,
                               ray_actor_options={"num_cpus": 1})
    return matcher.bind(options, key, writer.bind(options))


def start_proxy(serve, host: str, port: int) -> None:
    """Serve's HTTP proxy on ``host:port``; a Serve already running with another address is refused (reusing it
    could expose the bank beyond what ``--host`` and the key rule allowed), and so is one serving a bank already."""
    from ray.serve.context import _get_global_client

    serve.start(http_options={"host": host, "port": port})
    client = _get_global_client()
    if client is None:
        raise ConfigError("Ray Serve did not start on this cluster")
    config = client.http_config
    if (config.host, config.port) != (host, port):
        raise ConfigError(f"Ray Serve already runs on this cluster with its HTTP proxy at {config.host}:{config.port}, "
                          f"not {host}:{port}: use that --host and --port, or shut that Serve down first")
    if APP_NAME in serve.status().applications:  # deploying would replace that bank's replicas with ours
        raise ConfigError(f"a bank is served on this cluster's Ray Serve already (application {APP_NAME!r}): stop "
                          "that malle serve first")


def run_on_ray(options: ServeOptions, key: str | None, address: str, host: str, port: int,
               say: Callable[[str], None]) -> int:
    """Deploy, answer until SIGINT or SIGTERM, then take the application (and an otherwise idle Serve) down."""
    serve = import_serve()
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's progress lines; this command says its own
    options = replace(options, bank=check_bank_path(options.bank),
                      cache=options.cache or str(cache.default_root()))  # replicas use this machine's paths
    with contextlib.closing(Bank.open(options.bank, log=say)):  # a folder that is no bank fails here, once; a new
        pass  # folder becomes a bank here, not in N + 1 replicas at once
    connect(address, say)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    start_proxy(serve, host, port)  # nothing of ours runs before this: a refusal leaves the cluster as it was
    try:
        deploy(serve, application(serve, options, key, options.workers))
        say(f"Malle: serving bank {options.bank} at http://{host}:{port} (API docs at /docs) on Ray Serve: "
            f"{options.workers} matcher replica(s) and one writer" + (", API key required" if key else "")
            + (f", {options.rate:g} requests/s per key" if options.rate else ""))
        while not stop.wait(1.0):
            pass
    finally:
        take_down(serve)
    return 0


def deploy(serve, app, name: str = APP_NAME) -> None:
    """``serve.run``; a replica that could not start because of something the user can fix (an unreadable bank on
    its node, say: a ``MalleError``) is that error's one line. Anything else keeps its traceback."""
    try:
        serve.run(app, name=name, route_prefix="/", blocking=False)
    except RuntimeError:
        reasons = [said for deployment in serve.status().applications[name].deployments.values()
                   if (said := user_error(deployment.message))]
        if reasons:
            raise ConfigError(f"Ray Serve could not start the bank's replicas: {reasons[0]}") from None
        raise


def user_error(message: str) -> str | None:
    """The message of the ``MalleError`` a replica's traceback (a deployment's status message) ends with, if any."""
    last = message.strip().rpartition("\n")[2]
    kind, _, said = last.partition(": ")
    found = pydoc.locate(kind) if kind.startswith("malle.") else None
    return said if isinstance(found, type) and issubclass(found, MalleError) else None


def take_down(serve, name: str = APP_NAME) -> None:
    from ray.serve.exceptions import RayServeException

    try:
        serve.delete(name)
        if not serve.status().applications:
            serve.shutdown()
    except RayServeException:
        pass  # Serve was never started, or is gone already: nothing of ours is left

"""Connecting a driver to a Ray cluster: reachability, token authentication, one-line errors.

Since Ray 2.59, ``ray start --head`` turns token authentication on whenever a token exists
(``~/.ray/auth_token``, ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``; a local ``ray.init()`` writes
one), but ``ray.init(address=HOST:PORT)`` only sends it with ``RAY_AUTH_MODE=token``. Without it the
driver retries for about 40 s, prints ``InvalidAuthToken`` lines and ends in a ``ConnectionError``
that does not say why. So before ``ray.init`` one cheap request asks the cluster's GCS whether it
lets this driver in; if it wants a token and one is available here, the driver switches to token mode
the way Ray itself does for ``ray.init()`` (environment variable, then a config refresh); if it
still refuses, the error says which token is missing or wrong.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from malle.errors import ConfigError, import_extra

RAY_CONNECT_TIMEOUT_S = 5
PROBE_TIMEOUT_S = 5
AUTH_MODE = "RAY_AUTH_MODE"
# A made-up cluster id: with it the GCS answers at once (the token check comes first, then
# "WrongClusterID"), where a client that asks for the real id retries for ~40 s when refused.
PROBE_CLUSTER_ID = "00" * 28


def connect(address: str, log: Callable[[str], None]):
    """``ray.init`` on ``address`` ('auto', 'HOST:PORT', 'ray://host:10001', 'local' for a cluster of this
    machine); an address that cannot be reached or refuses this driver is a one-line error."""
    ray = import_extra("ray", "--ray")
    target = None if address == "local" else address
    if target not in (None, "auto"):
        check_reachable(target)
    if ray.is_initialized():
        return ray  # a session this process (or its test) opened already
    if target not in (None, "auto") and not target.startswith("ray://"):
        authenticate(target)
    elif target is not None and os.environ.get(AUTH_MODE) is None and token_available():
        enable_token_mode()  # ray:// and auto: no GCS to ask first; a token here is meant for the cluster
    try:
        ray.init(address=target, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, ray.exceptions.AuthenticationError) as err:
        reason = " ".join(str(err).split())[:200]
        raise ConfigError(f"--ray {address}: cannot reach a Ray cluster ({type(err).__name__}: {reason})") from None
    log(f"Ray: {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
    return ray


def check_reachable(address: str) -> None:
    """A TCP connect to HOST:PORT first: ray.init retries an unreachable address for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        with socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise ConfigError(f"--ray {address}: cannot reach a Ray cluster ({err.strerror or err})") from None


# -- token authentication ------------------------------------------------------------------------------
def authenticate(address: str) -> None:
    """Make this driver acceptable to the GCS at ``address``, or say in one line why it is not."""
    try:
        from ray._raylet import AuthenticationTokenLoader, GcsClient  # type: ignore[attr-defined]  # noqa: F401  (Ray >= 2.52; its stub lacks them)
    except ImportError:
        return  # a Ray without token authentication: nothing to negotiate
    if not refuses_token(address):
        return
    mode = os.environ.get(AUTH_MODE)
    has_token = token_available()
    if mode is None and has_token:
        enable_token_mode()
        if not refuses_token(address):
            return
    where = f"the cluster at {address} uses token authentication"
    if not has_token:
        raise ConfigError(f"--ray {address}: {where} and no token was found here: set RAY_AUTH_TOKEN_PATH "
                          "to a copy of its head node's ~/.ray/auth_token (or RAY_AUTH_TOKEN to the token), "
                          "or run on the head node")
    if mode is not None and mode.lower() != "token":
        raise ConfigError(f"--ray {address}: {where} but {AUTH_MODE}={mode} here: unset it or set {AUTH_MODE}=token")
    raise ConfigError(f"--ray {address}: {where} and rejected the token from {token_source()}: use that cluster's "
                      "token (its head node's ~/.ray/auth_token, or `ray get-auth-token` there)")


def refuses_token(address: str) -> bool:
    """Whether the GCS at ``address`` answers this driver, as it is set up now, with ``InvalidAuthToken``.
    Any other answer (even an error) means the token is not the problem; ray.init reports the rest."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # in ray._raylet, missing from its stub
    from ray.exceptions import AuthenticationError, RayError

    try:
        GcsClient(address=address, cluster_id=PROBE_CLUSTER_ID).internal_kv_get(b"malle-probe", None,
                                                                               timeout=PROBE_TIMEOUT_S)
    except AuthenticationError as err:
        return "InvalidAuthToken" in str(err)
    except RayError:
        return False
    return False


def token_available() -> bool:
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # missing from its stub

    return AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)


def enable_token_mode() -> None:
    """What Ray does for a local ``ray.init()``: the variable (inherited by anything this process starts),
    then a refresh of the cached config and token so this process sees it too."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # missing from its stub

    os.environ[AUTH_MODE] = "token"
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def token_source() -> str:
    """Where Ray looks for the token, in its order."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    return str(Path.home() / ".ray" / "auth_token")

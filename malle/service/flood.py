"""What keeps one client from drowning the server, and what ties a log line to a request (pure ASGI middleware).

* ``RequestContext`` (outermost): every request gets an id, its client's ``X-Request-ID`` when it sent a sane
  one, else a new one; the id is on every response, in every log line written while the request runs, and
  in every error body. One log line per request (method, path, status, milliseconds). An exception nothing
  else handled is a bug: it is logged with its traceback and answered as a JSON 500 with the id.
* ``Flood`` (inside the API key check): a token bucket per API key (per client address when the server has
  no key), ``rate`` requests a second with bursts of ``burst``, answered 429 with ``Retry-After`` once empty;
  and a bound on the requests in flight at once, answered 503 with ``Retry-After`` beyond it.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import math
import re
import secrets
import time
from collections import OrderedDict

from malle.service.guard import presented_key, send_json
from malle.service.statuses import body

LOG = logging.getLogger("malle.service")
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_BUCKETS = 10_000  # distinct clients remembered; the least recently seen is forgotten first
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_memory() -> bool:
    """Have glibc map every allocation of 1 MiB or more on its own, so a decoded image's buffers go back to the
    system when freed. By default the threshold rises with each large free (up to 32 MiB) and the pool threads'
    arenas keep what they freed: a burst of 8 heavy uploads left the server 1.5 GB larger for good. False where
    the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def printable(path: str, limit: int = 300) -> str:
    """A client's path as one log line can hold it: control characters escaped, cut at ``limit``."""
    text = path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (``%(request_id)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """The service's log lines on stderr, each with its request id."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(level)
    LOG.propagate = False


class RequestContext:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if CLIENT_ID.fullmatch(given) else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)
        started, status = time.perf_counter(), [0]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            LOG.exception("%s %s: unexpected error (a bug)", scope["method"], printable(scope["path"]))
            if not status[0]:
                status[0] = 500
                await send_json(send, 500, body(scope, 500, f"internal error; the server log has its details under "
                                                            f"request id {rid}", "internal"),
                                [(b"x-request-id", rid.encode())])
        finally:
            LOG.info("%s %s -> %d in %.0f ms", scope["method"], printable(scope["path"]), status[0],
                     (time.perf_counter() - started) * 1000)
            REQUEST_ID.reset(token)


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take`` answers 0 when a token was taken, else the seconds
    until one will be there."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Flood:
    def __init__(self, app, rate: float | None, burst: float | None, max_in_flight: int, keyed: bool) -> None:
        self.app, self.rate, self.max_in_flight, self.keyed = app, rate, max_in_flight, keyed
        self.burst = burst if burst is not None else max(1.0, 2 * (rate or 0))
        self.buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self.in_flight = 0  # one event loop: no lock needed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.rate is not None:
            wait = self._bucket(scope, self.rate).take()
            if wait:
                return await send_json(send, 429, body(scope, 429, f"over the rate of {self.rate:g} requests a "
                                                                   f"second; retry in {wait:.1f} s"),
                                       [(b"retry-after", str(math.ceil(wait)).encode())])
        if self.in_flight >= self.max_in_flight:
            return await send_json(send, 503, body(scope, 503, f"{self.max_in_flight} requests in flight already; "
                                                               "retry shortly"), [(b"retry-after", b"1")])
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _bucket(self, scope, rate: float) -> TokenBucket:
        # With a key the guard has checked it, so it names the client; without one, any header could be made up.
        key = presented_key(dict(scope["headers"])) if self.keyed else None
        who = hashlib.sha256(key).digest() if key else str((scope.get("client") or ("?",))[0]).encode()
        bucket = self.buckets.pop(who, None) or TokenBucket(rate, self.burst)
        self.buckets[who] = bucket
        while len(self.buckets) > MAX_BUCKETS:
            self.buckets.popitem(last=False)
        return bucket

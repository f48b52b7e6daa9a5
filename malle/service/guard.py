"""What stands in front of every request: the API key and the upload size limit (pure ASGI middleware).

Serving binds loopback by default. Any other address exposes the bank, so it needs a key (from
``--api-key-file`` or ``MALLE_API_KEY``); without one the server refuses to start. When a key is set it is
checked on every request, whatever the address, in constant time, from ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``; only the contract itself (``/docs`` and ``/openapi.json``, which hold no bank data) is
served without it, so a browser can open ``/docs`` and use its Authorize button.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from pathlib import Path

from malle.errors import ConfigError

API_KEY_ENV = "MALLE_API_KEY"
MIN_KEY_LENGTH = 16
OPEN_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def load_key(key_file: str | Path | None) -> str | None:
    """The key from ``key_file`` (first line), else ``$MALLE_API_KEY``, else None."""
    if key_file is not None:
        try:
            key = Path(key_file).expanduser().read_text().strip()
        except OSError as err:
            raise ConfigError(f"--api-key-file {key_file}: cannot be read ({err.strerror or err})") from None
        source = f"--api-key-file {key_file}"
    else:
        key = os.environ.get(API_KEY_ENV, "").strip()
        source = f"${API_KEY_ENV}"
        if not key:
            return None
    if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
        raise ConfigError(f"{source}: an API key must be at least {MIN_KEY_LENGTH} characters without spaces")
    return key


def check_exposure(host: str, key: str | None) -> None:
    """Refuse a non-loopback bind without a key."""
    if not is_loopback(host) and key is None:
        raise ConfigError(f"--host {host} exposes the bank beyond this machine; give an API key with "
                          f"--api-key-file FILE or ${API_KEY_ENV} (or bind 127.0.0.1)")


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | tuple = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return headers.get(b"x-api-key")


class Guard:
    """The API key on every request, then the body size: a declared Content-Length over the limit is
    refused before it is read, and a body without one is cut off once it passes the limit."""

    def __init__(self, app, key: str | None, max_body_bytes: int) -> None:
        self.app, self.max_body = app, max_body_bytes
        self.key = key.encode() if key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        rid = scope.get("state", {}).get("request_id")
        if self.key is not None and not (scope["path"] in OPEN_PATHS and scope["method"] in ("GET", "HEAD")):
            given = presented_key(headers)
            if given is None or not hmac.compare_digest(given, self.key):
                return await send_json(send, 401, {"error": "missing or wrong API key (Authorization: Bearer "
                                                            "KEY or X-API-Key: KEY)", "code": "unauthorized",
                                                   "request_id": rid},
                                       [(b"www-authenticate", b"Bearer")])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await send_json(send, 413, {"error": f"request body over the limit of "
                                                        f"{self.max_body / 2**20:.0f} MiB", "code": "too_large",
                                               "request_id": rid})
        return await self.app(scope, self._counting(receive), send)

    def _counting(self, receive):
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BodyTooLarge(self.max_body)
            return message

        return counted


class BodyTooLarge(Exception):
    """A body without Content-Length grew past the limit while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over the limit of {limit / 2**20:.0f} MiB")

"""Item metadata: a JSON object, checked whole before anything is written, read back without ever raising.

Checked: valid JSON (no ``NaN``, ``Infinity``, or numbers that overflow to them, such as ``1e999``), an object
at the top, nested at most ``MAX_DEPTH`` deep, every string and key valid UTF-8 (a lone surrogate such as
``"\\ud800"`` parses as JSON but cannot be sent back as UTF-8, so it once stored an item that no read could
answer), and at most ``METADATA_MAX_BYTES`` as stored. A row stored before these checks is repaired on the way
out (lone surrogates become U+FFFD) or, when it cannot be parsed at all, read as a note saying so.
"""

from __future__ import annotations

import json
import math

from malle.errors import ConfigError

METADATA_MAX_BYTES = 64 * 1024
MAX_DEPTH = 32
UNREADABLE_KEY = "_unreadable"


def metadata_json(metadata) -> str:
    """Metadata as stored (JSON text, keys sorted); a ``ConfigError`` naming the first problem otherwise."""
    if metadata is None:
        return "{}"
    if isinstance(metadata, str):
        metadata = parse(metadata)
    if not isinstance(metadata, dict):
        raise ConfigError("metadata must be a JSON object, such as {\"source\": \"upload\"}")
    check_value(metadata)
    text = json.dumps(metadata, sort_keys=True, allow_nan=False)
    if len(text.encode()) > METADATA_MAX_BYTES:
        raise ConfigError(f"metadata is larger than {METADATA_MAX_BYTES // 1024} KiB")
    return text


def parse(text: str) -> object:
    if len(text.encode("utf-8", "surrogatepass")) > 4 * METADATA_MAX_BYTES:
        raise ConfigError(f"metadata is larger than {METADATA_MAX_BYTES // 1024} KiB")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ConfigError(f"metadata is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:
        raise ConfigError(f"metadata is not valid JSON ({err})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def check_value(value) -> None:
    """Walk ``value`` without recursion: depth, finite numbers, UTF-8 strings, JSON types only."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise ConfigError(f"metadata is nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str):
                        raise ConfigError(f"metadata keys must be strings (got {type(key).__name__})")
                    _check_text(key)
                stack += [(v, depth + 1) for v in item.values()]
            else:
                stack += [(v, depth + 1) for v in item]
        elif isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ConfigError(f"metadata numbers must be finite (got {item})")
        elif not (item is None or isinstance(item, bool | int)):
            raise ConfigError(f"metadata holds a value JSON cannot store ({type(item).__name__})")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("metadata holds text that is not valid UTF-8 (a lone surrogate such as \\ud800)") from None


def read(text: str) -> dict:
    """Stored metadata as a dict, whatever the row holds: never raises."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError, TypeError):
        return {UNREADABLE_KEY: "the stored metadata is not readable JSON"}
    if not isinstance(value, dict):
        return {UNREADABLE_KEY: "the stored metadata is not a JSON object"}
    if text.isascii() and "\\ud" not in text.lower():
        return value  # the usual case: no escaped surrogate can be inside
    try:
        return json.loads(_repaired(text))
    except (ValueError, RecursionError):
        return {UNREADABLE_KEY: "the stored metadata is not readable JSON"}


def _repaired(text: str) -> str:
    """The JSON text with each lone surrogate replaced by U+FFFD, as UTF-8 can carry it."""
    plain = json.dumps(json.loads(text), ensure_ascii=False)
    return plain.encode("utf-16", "surrogatepass").decode("utf-16", "replace")

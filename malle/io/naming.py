"""File names: unique among names already taken, and never too long for the file system."""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Linux and macOS allow 255 bytes per name; stay well inside so suffixes (-2, .JPEG) always fit.
MAX_NAME_BYTES = 200
DIGEST_CHARS = 8


def unique_name(stem: str, suffix: str, taken: set[str]) -> str:
    """``stem + suffix``, else ``stem-2 + suffix``, ``stem-3``...; the result is added to ``taken``."""
    stem = shorten(stem, MAX_NAME_BYTES)
    name, n = f"{stem}{suffix}", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{suffix}"
    taken.add(name)
    return name


def shorten(text: str, max_bytes: int) -> str:
    """``text`` if its UTF-8 fits ``max_bytes``, else a prefix plus ``-`` and a digest of the whole,
    so two long names that share a prefix stay distinct."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    digest = hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]
    prefix = data[: max_bytes - DIGEST_CHARS - 1].decode(errors="ignore")  # never split a character
    return f"{prefix}-{digest}"


def token(text: str, max_bytes: int) -> str:
    """A file-name token in any script: letters, digits and ``-`` only (``_`` separates tokens)."""
    cleaned = re.sub(r"(?:[^\w-]|_)+", "-", unicodedata.normalize("NFC", text)).strip("-") or "x"
    return shorten(cleaned, max_bytes)


def safe_file_name(name: str, taken: set[str]) -> str:
    """A user-supplied file name's base name with only safe characters, unique within ``taken``.

    Letters of every script are kept (the class prefix before ``_`` must survive); path
    separators, control characters and leading dots are not.
    """
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    suffix = ("." + re.sub(r"[^A-Za-z0-9]+", "", suffix).lower()) if suffix else ""
    stem = re.sub(r"[^\w.-]+", "-", stem).strip("-.") or "image"
    return unique_name(stem, suffix[:16], taken)

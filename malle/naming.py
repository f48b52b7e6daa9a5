"""File names: one rule for making a name unique among names already taken."""

from __future__ import annotations


def unique_name(stem: str, suffix: str, taken: set[str]) -> str:
    """``stem + suffix``, else ``stem-2 + suffix``, ``stem-3``...; the result is added to ``taken``."""
    name, n = f"{stem}{suffix}", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{suffix}"
    taken.add(name)
    return name

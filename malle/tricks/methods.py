"""Derived methods: a base method with matching tricks named by suffix, e.g. ``sscd_distilled+norm+verify``.

A derived method reuses its base method's codes (its ``embed`` stage) and has its own search and open-set
outputs, so it sits next to its base in every table. The tricks apply in one fixed order, whatever the
spelling, and the name is canonicalised to that order:

1. ``regions``: the query is also searched as windows; it changes the candidate list;
2. ``verify``: the top candidates of that list are re-ranked by local-feature verification;
3. ``norm``: every score of a query is shifted by its background similarity (ranks do not move).

So ``sscd_distilled+norm+regions`` is ``sscd_distilled+regions+norm``. Each trick needs a float (cosine)
descriptor; a suffix on a Hamming method (``phash+norm``) is a one-line ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from malle.errors import ConfigError

SEPARATOR = "+"


@dataclass(frozen=True)
class Trick:
    """One matching trick: its suffix, what it is called in labels, and its place in the order of application."""

    suffix: str
    title: str
    order: int


REGIONS = Trick("regions", "region queries", 1)
VERIFY = Trick("verify", "SIFT verification", 2)
NORM = Trick("norm", "score normalisation", 3)
TRICKS = {trick.suffix: trick for trick in (REGIONS, VERIFY, NORM)}


@dataclass(frozen=True)
class MethodName:
    """A method's name taken apart: its base method and its tricks, in the order they apply."""

    base: str
    tricks: tuple[Trick, ...] = ()

    @property
    def name(self) -> str:
        """The canonical name: the base, then the suffixes in the order they apply."""
        return SEPARATOR.join([self.base, *(t.suffix for t in self.tricks)])

    @property
    def is_derived(self) -> bool:
        return bool(self.tricks)

    @property
    def parent(self) -> MethodName:
        """The method this one adds its last trick to (the base, for one trick)."""
        return MethodName(self.base, self.tricks[:-1])

    @property
    def last(self) -> Trick:
        return self.tricks[-1]

    def uses(self, trick: Trick) -> bool:
        return trick in self.tricks

    def with_base(self, base: str) -> MethodName:
        return MethodName(base, self.tricks)

    def label(self, base_label: str) -> str:
        """The base method's full label with the tricks added."""
        return base_label + "".join(f" + {t.title}" for t in self.tricks)

    def short(self) -> str:
        """The tricks as a short suffix for headers ("" for a base method)."""
        return "".join(f"+{t.suffix}" for t in self.tricks)


def parse(name: str) -> MethodName:
    """``METHOD[+trick...]`` taken apart; unknown or repeated suffixes are a ``ConfigError``.

    A spec file's path (``*.toml``) is a base method even if it holds a ``+``."""
    if name.endswith(".toml") or SEPARATOR not in name:
        return MethodName(name)
    base, *suffixes = name.split(SEPARATOR)
    unknown = [s for s in suffixes if s not in TRICKS]
    if not base or unknown:
        what = f"unknown suffix(es) {', '.join(map(repr, unknown))}" if unknown else "no method before the suffix"
        raise ConfigError(f"method {name!r}: {what}; a method takes the suffixes {', '.join(TRICKS)} "
                          "(e.g. sscd_distilled+norm+verify)")
    tricks = [TRICKS[s] for s in suffixes]
    if len(set(tricks)) != len(tricks):
        raise ConfigError(f"method {name!r}: a suffix is repeated; each trick applies once")
    return MethodName(base, tuple(sorted(tricks, key=lambda t: t.order)))


def base_of(name: str) -> str:
    """The base method of ``name`` (``name`` itself for a base method)."""
    return parse(name).base


def check_float(parsed: MethodName, metric) -> None:
    """Tricks work on float (cosine) descriptors; a suffix on any other method is a ``ConfigError``."""
    if parsed.is_derived and metric.name != "ip":
        raise ConfigError(f"method {parsed.name!r}: the suffixes {', '.join(TRICKS)} need a float (cosine) "
                          f"descriptor; {parsed.base} is scored by {metric.score_name}")

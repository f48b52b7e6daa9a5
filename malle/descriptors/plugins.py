"""Methods other packages add: a ``Descriptor`` subclass registered under the entry-point group
``malle.descriptors``, the entry point named as the method::

    [project.entry-points."malle.descriptors"]
    my_hash = "my_package.module:MyHash"   # MyHash.name == "my_hash"

Plug-ins are found once per process, when a name is not built in or when methods are listed. A
plug-in that cannot be imported, is not a usable ``Descriptor`` subclass, or takes a name already
in use is kept as a ``Plugin`` with its ``problem``: it is reported as unavailable with that
reason, never a crash. Plug-ins are used when asked for by name; they never join the default set,
so installing a package does not change a default run's results.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from dataclasses import dataclass

from malle.descriptors.base import Descriptor
from malle.retrieval.metrics import Metric

GROUP = "malle.descriptors"


@dataclass(frozen=True)
class Plugin:
    name: str  # the entry point's name: the method's name
    target: str  # module:attribute
    distribution: str  # the package that registers it, with its version
    cls: type[Descriptor] | None  # None when it cannot be used
    problem: str | None = None  # why it cannot be used


@functools.cache
def discover(taken: frozenset[str]) -> dict[str, Plugin]:
    """Every plug-in installed, usable or not, by name; ``taken``: the built-in names."""
    found: dict[str, Plugin] = {}
    for entry in importlib.metadata.entry_points(group=GROUP):
        dist = f"{entry.dist.name} {entry.dist.version}" if entry.dist is not None else "an unknown distribution"
        if entry.name in found:
            found[entry.name] = _broken(entry, dist, f"the name is registered twice ({found[entry.name].distribution} "
                                                     f"and {dist})")
            continue
        found[entry.name] = _load(entry, dist, taken)
    return found


def _load(entry: importlib.metadata.EntryPoint, dist: str, taken: frozenset[str]) -> Plugin:
    if entry.name in taken:
        return _broken(entry, dist, f"{entry.name!r} is the name of a built-in method")
    try:
        cls = entry.load()
    except Exception as err:  # a plug-in's import may raise anything; it is reported, not raised
        return _broken(entry, dist, f"{entry.value} cannot be imported ({type(err).__name__}: {err})")
    problem = _unusable(cls, entry.name)
    return _broken(entry, dist, problem) if problem else Plugin(entry.name, entry.value, dist, cls)


def _unusable(cls: object, name: str) -> str | None:
    """Why a loaded object cannot serve as the method ``name``, or None."""
    if not (isinstance(cls, type) and issubclass(cls, Descriptor)):
        return f"{cls!r} is not a subclass of malle.descriptors.Descriptor"
    if inspect.isabstract(cls):
        return f"{cls.__name__} leaves {', '.join(sorted(cls.__abstractmethods__))} unimplemented"
    if getattr(cls, "name", None) != name:
        return f"{cls.__name__}.name is {getattr(cls, 'name', None)!r}, not the entry point's name {name!r}"
    if getattr(cls, "family", None) is None or not isinstance(getattr(cls, "metric", None), Metric):
        return f"{cls.__name__} must set family and metric (IP or HAMMING from malle.retrieval.metrics)"
    return None


def _broken(entry: importlib.metadata.EntryPoint, dist: str, problem: str) -> Plugin:
    return Plugin(entry.name, entry.value, dist, None, problem)

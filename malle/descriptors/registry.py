"""Name -> descriptor class, and choosing which methods a run can use.

A method is one of three kinds, found in this order:

- built in (``DESCRIPTORS``);
- the path of a TOML spec describing a user's ONNX model (``onnx_spec``, ``user_onnx``): the method
  takes the spec's ``name``, and that name then also finds it in the ``MethodRegistry`` that was given the
  path (each experiment, bank and dashboard visitor owns one, so no name leaks between them);
- a plug-in: a ``Descriptor`` another package registers under the entry-point group
  ``malle.descriptors`` (``plugins``).

Every descriptor reports its own weights status. A default run (built-in methods only) leaves out
the methods whose weights cannot be had, each as one ``Unavailable`` record (method, reason, how to
fix); an explicit request keeps them, and ``Experiment.check`` loads their weights before any other
work, so a run never fails halfway or falls back to random weights silently. A bad spec or a broken
plug-in is one ``ConfigError`` line as soon as it is asked for.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from malle.descriptors.base import Descriptor, Unavailable
from malle.descriptors.cnn import EfficientNetLite2, ResNet50, check_precision
from malle.descriptors.hashes import AHash, DHash, PHash, WHash
from malle.descriptors.onnx_spec import SPEC_SUFFIX, is_spec_path
from malle.descriptors.pdq import PDQ, PDQDihedral
from malle.descriptors.plugins import Plugin, discover
from malle.descriptors.sscd import SSCD, SSCDDistilled
from malle.descriptors.user_onnx import FAMILY as USER_FAMILY
from malle.descriptors.user_onnx import load_method
from malle.errors import ConfigError
from malle.inference.precision import check_engine
from malle.tricks import methods as method_names

DESCRIPTORS: dict[str, type[Descriptor]] = {
    cls.name: cls
    for cls in (SSCD, SSCDDistilled, ResNet50, EfficientNetLite2, PHash, PDQ, PDQDihedral, DHash, AHash, WHash)
}
DEFAULT_METHODS = tuple(name for name, cls in DESCRIPTORS.items() if cls.default)
WeightsMap = Mapping[str, "str | Path"]  # method -> weights file, for descriptors that take one
METHODS_DIR_ENV = "MALLE_METHODS_DIR"  # the folder of spec files the dashboard offers


class MethodRegistry:
    """Method names -> descriptor classes for one owner (an experiment, a bank, a dashboard visitor).

    Built-in and plug-in methods are the same for every owner. A spec file asked for by path is checked, and
    from then on its ``name`` finds it in this registry alone: the owner's results carry that name, and another
    owner's spec of the same name cannot shadow it."""

    def __init__(self) -> None:
        self._specs: dict[str, Path] = {}
        self._lock = threading.Lock()

    def descriptor_class(self, name: str) -> type[Descriptor]:
        """A built-in name, a spec file's path, a plug-in's name, or the name of a spec given here earlier."""
        cls = DESCRIPTORS.get(name)
        if cls is not None:
            return cls
        if is_spec_path(name):
            return self.spec_method(name)
        plugin = plugins().get(name)
        if plugin is not None:
            return plugin_class(plugin)
        with self._lock:
            spec = self._specs.get(name)
        if spec is None:
            raise ConfigError(unknown_names_message([name]))
        return load_method(spec)

    def spec_method(self, path: str | Path) -> type[Descriptor]:
        """The method a spec file describes, fully checked, and from now on also found here by its name."""
        cls = load_method(path)
        taken = ("a built-in method" if cls.name in DESCRIPTORS
                 else "a plug-in method" if cls.name in plugins() else None)
        if taken:
            raise ConfigError(f"method spec {cls.spec.path}: name {cls.name!r} is taken by {taken}; choose another")
        with self._lock:
            other = self._specs.get(cls.name)
            if other is not None and other != cls.spec.path and _spec_name(other) == cls.name:
                raise ConfigError(f"method spec {cls.spec.path}: name {cls.name!r} is already used by {other}; "
                                  "give one of them another name")
            self._specs[cls.name] = cls.spec.path
        return cls

    def is_method_name(self, name: str) -> bool:
        """Whether ``name`` can name a method (a spec path still has to hold a good spec; a derived method's
        suffixes are checked by ``malle.tricks.methods.parse``)."""
        name = method_names.parse(name).base
        if name in DESCRIPTORS or is_spec_path(name):
            return True
        with self._lock:
            if name in self._specs:
                return True
        return name in plugins()

    def create_descriptor(self, name: str, weights: str | Path | None = None, precision: str = "auto",
                          engine: str = "auto") -> Descriptor:
        """Instantiate by name; ``weights`` (or the descriptor's environment variable) names its file.

        ``precision`` (auto, fp32, bf16, int8) and ``engine`` (auto, onnxruntime, openvino) apply to methods that
        offer a choice (the networks); the rest keep their own."""
        check_precision(precision)
        check_engine(engine, precision)
        cls = self.descriptor_class(name)
        extra = {"precision": precision, "engine": engine} if cls.precision_choice else {}
        return cls(weights=cls.resolve_weights(weights), **extra)

    def resolve_methods(self, requested: Sequence[str] | None,
                        weights: WeightsMap | None = None) -> tuple[list[str], list[Unavailable]]:
        """(methods to run, default methods left out because they cannot run here). Deduplicates, keeps order."""
        weights = weights or {}
        if requested is None:
            unavailable = [u for name in DEFAULT_METHODS if (u := DESCRIPTORS[name].unavailable(weights.get(name)))]
            skipped = {u.method for u in unavailable}
            return [name for name in DEFAULT_METHODS if name not in skipped], unavailable
        if not requested:
            raise ConfigError(f"no methods requested; valid names: {', '.join(DESCRIPTORS)}")
        # In order, so a spec's name may follow its path; a path becomes the spec's name. Every spec and
        # plug-in is checked here, before any work.
        methods, unknown = [], []
        for name in requested:
            parsed = method_names.parse(name)  # a derived method (``METHOD+norm``) is checked by its base
            if self.is_method_name(parsed.base):
                cls = self.descriptor_class(parsed.base)
                method_names.check_float(parsed, cls.metric)
                methods.append(parsed.with_base(cls.name).name)
            else:
                unknown.append(name)
        if unknown:
            raise ConfigError(unknown_names_message(unknown))
        return list(dict.fromkeys(methods)), []

    def list_methods(self, specs: Sequence[str | Path] = (), weights: WeightsMap | None = None) -> list[MethodInfo]:
        """Every built-in and plug-in method, then each spec in ``specs``, with whether it can run here."""
        weights = weights or {}
        found = [_info(cls, "built-in", weights.get(name)) for name, cls in DESCRIPTORS.items()]
        found += [_plugin_info(plugin) for plugin in plugins().values()]
        for path in specs:
            try:
                found.append(_info(self.spec_method(path), str(path)))
            except ConfigError as err:
                found.append(MethodInfo(Path(path).stem, str(path), USER_FAMILY, "-", str(err)))
        return found


# Without an owner: built-in and plug-in names and spec paths, in a registry that is gone after the call.
def descriptor_class(name: str) -> type[Descriptor]:
    return MethodRegistry().descriptor_class(name)


def known_class(name: str) -> type[Descriptor] | None:
    """A built-in or plug-in method's class, without loading anything an owner was given; None for any other
    name (a spec's name, which only the registry of the run or bank that was given its file resolves)."""
    if name in DESCRIPTORS:
        return DESCRIPTORS[name]
    plugin = plugins().get(name)
    return plugin_class(plugin) if plugin is not None else None


def family_of(name: str) -> str:
    """A method's family by its name alone: a name that is neither built in nor a plug-in is a spec's, whose
    family is always ``user_onnx.FAMILY``."""
    cls = known_class(name)
    return str(cls.family) if cls is not None else USER_FAMILY


def create_descriptor(name: str, weights: str | Path | None = None, precision: str = "auto",
                      engine: str = "auto") -> Descriptor:
    return MethodRegistry().create_descriptor(name, weights, precision, engine)


def resolve_methods(requested: Sequence[str] | None,
                    weights: WeightsMap | None = None) -> tuple[list[str], list[Unavailable]]:
    return MethodRegistry().resolve_methods(requested, weights)


def list_methods(specs: Sequence[str | Path] = (), weights: WeightsMap | None = None) -> list[MethodInfo]:
    return MethodRegistry().list_methods(specs, weights)


def plugins() -> dict[str, Plugin]:
    """Every installed plug-in by name, usable or not (found once per process)."""
    return discover(frozenset(DESCRIPTORS))


def plugin_class(plugin: Plugin) -> type[Descriptor]:
    if plugin.cls is None:
        raise ConfigError(f"plug-in method {plugin.name!r} ({plugin.distribution}) cannot be used: {plugin.problem}")
    return plugin.cls


def _spec_name(path: Path) -> str | None:
    try:
        return load_method(path).name
    except ConfigError:
        return None  # that file no longer holds a good spec: its name is free


def weight_options() -> dict[str, type[Descriptor]]:
    """``--<name>-weights`` option name -> descriptor, for every descriptor that takes a weights file."""
    return {f"{name.replace('_', '-')}-weights": cls for name, cls in DESCRIPTORS.items() if cls.weights_env}


def available_methods(weights: WeightsMap | None = None) -> list[str]:
    """Every built-in and plug-in method that can run here now."""
    weights = weights or {}
    return [info.method for info in list_methods(weights=weights) if info.problem is None]


def unknown_names_message(names: Sequence[str]) -> str:
    known = [*DESCRIPTORS, *(name for name, plugin in plugins().items() if plugin.cls is not None)]
    return (f"unknown method(s) {', '.join(map(repr, names))}; valid names: {', '.join(known)}, "
            f"or the path of a {SPEC_SUFFIX} method spec")


# -- listing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodInfo:
    method: str
    source: str  # "built-in", "plug-in (<distribution> <version>)", or the spec file
    family: str
    label: str
    problem: str | None  # why it cannot run here and how to fix it; None when it can


def _info(cls: type[Descriptor], source: str, weights: str | Path | None = None) -> MethodInfo:
    unavailable = cls.unavailable(weights)
    return MethodInfo(cls.name, source, str(cls.family), cls.display_name(),
                      f"{unavailable.reason}. {unavailable.fix}".strip() if unavailable else None)


def _plugin_info(plugin: Plugin) -> MethodInfo:
    source = f"plug-in ({plugin.distribution})"
    if plugin.cls is None:
        return MethodInfo(plugin.name, source, "?", plugin.target, plugin.problem)
    try:
        return _info(plugin.cls, source)
    except Exception as err:  # a plug-in's own weights check may raise anything; it is reported, not raised
        return MethodInfo(plugin.name, source, str(plugin.cls.family), plugin.cls.display_name(),
                          f"its weights check failed ({type(err).__name__}: {err})")


def methods_folder() -> Path:
    """Where the dashboard looks for spec files: ``$MALLE_METHODS_DIR``, else ``~/.config/malle/methods``."""
    return Path(os.environ.get(METHODS_DIR_ENV) or "~/.config/malle/methods").expanduser()


def folder_specs(folder: Path | None = None) -> list[Path]:
    """The spec files directly in ``folder`` (default: ``methods_folder()``), in name order."""
    folder = methods_folder() if folder is None else folder
    return sorted(p for p in folder.glob(f"*{SPEC_SUFFIX}") if p.is_file()) if folder.is_dir() else []

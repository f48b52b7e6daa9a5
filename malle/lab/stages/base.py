"""What a stage is: a small spec the engine (``malle.lab.stages.runner``) runs, caches and times.

A stage spec declares

- ``kind``: its name, which is also its cache folder (``<cache>/<kind>/<key>/``);
- ``version``: bumped by one when its output changes for the same inputs;
- ``params``: what one instance of it is for, e.g. ``("method",)`` or ``("op", "level")``;
- ``needs(ctx)``: the stage instances it reads (may depend on the config);
- ``key_parts(ctx)``: its own key parts (config values, fingerprints); the engine adds its inputs' keys;
- ``build(ctx, tmp, meta)``: writes its files into ``tmp`` and what to record into ``meta``;
- ``notice(ctx, built)``: an optional line to log the first time it is obtained.

``ctx`` is a ``Ctx``: the run's shared facts and tables (``ctx.run``) and the instance's parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import features

from malle.descriptors.base import package_versions

if TYPE_CHECKING:
    from malle.descriptors import Descriptor
    from malle.lab.stages.context import RunContext

Progress = Callable[..., object]  # tqdm-like: progress(total=, desc=) -> obj with update(n), close()


@dataclass(frozen=True)
class Node:
    """One instance of a stage: its kind and parameters, e.g. ``Node("embed", ("phash",))``."""

    kind: str
    args: tuple = ()

    def __str__(self) -> str:
        return self.kind + (f"[{':'.join(map(str, self.args))}]" if self.args else "")


@dataclass(frozen=True)
class Built:
    """A finished stage: its verified folder, what it recorded, and whether the cache already held it."""

    node: Node
    folder: Path
    meta: dict
    cached: bool


@dataclass(frozen=True)
class Ctx:
    """What a stage spec sees: the run, the instance it is asked for, and where to report progress."""

    run: RunContext
    node: Node
    progress: Progress | None = None

    @property
    def args(self) -> tuple:
        return self.node.args

    @property
    def method(self) -> str:
        """The method of a per-method stage (its first parameter)."""
        return self.node.args[0]

    @property
    def desc(self) -> Descriptor:
        return self.run.descriptor(self.method)

    def input(self, kind: str, *args) -> Built:
        """An upstream stage this one declared in ``needs``."""
        return self.run.stage(kind, *args, progress=self.progress)


class Stage:
    """Base of the stage specs; subclasses set the class attributes and override what they use."""

    # Class attributes of most stages; the derived stages (``derived``) set them per instance.
    kind: str
    version: int
    params: tuple[str, ...] = ()

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return ()

    def key_parts(self, ctx: Ctx) -> tuple:
        return ()

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        raise NotImplementedError

    def notice(self, ctx: Ctx, built: Built) -> str | None:
        return None


@functools.cache
def _pixel_versions() -> tuple[tuple[str, str], ...]:
    return tuple({**package_versions(("Pillow", "torchvision", "torch", "numpy")),
                  "libjpeg": str(features.version("jpg"))}.items())


def pixel_versions() -> dict[str, str]:
    """Libraries whose upgrade can change the pixels of originals and copies (decoders, encoders, ops, RNG).

    Reads ``_pixel_versions`` at each call, so a test can stand in another version there."""
    return dict(_pixel_versions())

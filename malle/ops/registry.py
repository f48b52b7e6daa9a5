"""``Op``, the base of every edit, and ``OPS``, the registry that op modules fill with ``@register``.

Like torchvision transforms v2, an op separates random parameter sampling
(``make_params``) from deterministic application (``apply``), so any copy can be
replayed pixel-identically and a UI can apply an op with hand-picked parameters.

``OPS`` keeps registration order, and that order matters: chains are sampled by
permuting ops in it, so it decides which copies a seed makes (see ``malle.ops``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from PIL import Image

from malle.ops.params import ParamSpec, Size, Sweep

# Op names are tokens of copy file names (``{class}_{instance}_{op}..._{op}.JPEG``).
OP_NAME = re.compile(r"[a-z]+")


class Op(ABC):
    name: ClassVar[str]  # filename token: lowercase ascii letters only
    label: ClassVar[str]
    params: ClassVar[tuple[ParamSpec, ...]]
    sweep: ClassVar[Sweep]  # how ``python -m malle severity`` varies this op, strength by strength

    def make_params(self, rng: np.random.Generator, size: Size) -> dict:
        """Sample parameters for an input of ``size`` (width, height), in ``params`` order.

        Derived from the specs' distributions; an op overrides this only where a
        parameter depends on the image (blur's kernel on its size).
        """
        return {spec.name: spec.sample.sample(rng) for spec in self.params if spec.sample is not None}

    @abstractmethod
    def apply(self, img: Image.Image, params: dict) -> Image.Image:
        """Deterministic: the same image and params always give the same pixels."""

    def output_size(self, size: Size, params: dict) -> Size:
        """Size of ``apply``'s output, so a chain can be sampled without pixels."""
        return size

    def default_params(self) -> dict:
        return {spec.name: spec.default for spec in self.params}

    def __repr__(self) -> str:
        return f"<op {self.name}>"


OPS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add one instance of ``cls`` to ``OPS``, after every op registered before it."""
    name = cls.name
    if not OP_NAME.fullmatch(name):
        raise ValueError(f"op name {name!r} must be lowercase ascii letters (it is a file-name token)")
    if name in OPS:
        raise ValueError(f"op {name!r} is registered twice ({type(OPS[name]).__qualname__} and {cls.__qualname__})")
    if not isinstance(getattr(cls, "sweep", None), Sweep):
        raise TypeError(f"op {name!r} declares no severity sweep (a Sweep as its class attribute 'sweep')")
    OPS[name] = cls()
    return cls


def ops_defined_in(module: str) -> tuple[Op, ...]:
    """The registered ops whose classes ``module`` defines, in registry order: one family of ops."""
    return tuple(op for op in OPS.values() if type(op).__module__ == module)


def get_op(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; valid ops: {', '.join(OPS)}") from None

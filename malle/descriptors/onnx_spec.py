"""What a method spec (a small TOML file describing a user's ONNX model) says, checked key by key.

    name = "my_student"
    onnx = "sscd_distilled.onnx"   # relative to this file, or absolute
    layout = "nhwc_uint8"          # or "nchw_float", which also needs mean = [r, g, b] and std = [r, g, b]
    resize = "square"              # or "short_side", or "short_side_crop" (with crop_pct, timm's convention)
    size = 288                     # the model's input side (the short side for short_side)
    interpolation = "bilinear"     # a Pillow filter: nearest, box, bilinear, hamming, bicubic, lanczos
    metric = "cosine"              # or "hamming" with bits = N: each output value above zero is a 1 bit
    # output = "embedding"         # which output, when the model has several

Each word a key takes becomes an object (a resize, a layout, a way to make codes) that does its part,
so nothing downstream switches on the words. ``read_spec`` raises one ``ConfigError`` line naming
the file and the key for a missing key, a wrong type, an unknown value or a key that does not apply;
``malle.descriptors.user_onnx`` then checks the model itself.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from malle.descriptors.base import l2_normalise
from malle.descriptors.resize import ShortSide, ShortSideCrop, Square
from malle.errors import ConfigError
from malle.retrieval.metrics import HAMMING, IP, Metric

SPEC_SUFFIX = ".toml"
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
RESAMPLING = {member.name.lower(): member for member in Image.Resampling}
MAX_SIDE = 8192


# -- how an image becomes the model's input: a resize (``malle.descriptors.resize``), then a layout --
@dataclass(frozen=True)
class NhwcUint8:
    """RGB bytes as they are, ``[n, h, w, 3]``: the model normalises inside its graph."""

    name: ClassVar[str] = "nhwc_uint8"
    input_type: ClassVar[str] = "tensor(uint8)"
    spatial: ClassVar[slice] = slice(1, 3)  # where height and width sit in the input's shape

    def array(self, img: Image.Image) -> np.ndarray:
        return np.asarray(img, dtype=np.uint8)

    def settings(self) -> dict:
        return {"layout": self.name}


@dataclass(frozen=True)
class NchwFloat:
    """``[n, 3, h, w]`` float32: values scaled to 0..1, then ``(x - mean) / std`` per channel (torchvision's
    ToTensor and Normalize)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: ClassVar[str] = "nchw_float"
    input_type: ClassVar[str] = "tensor(float)"
    spatial: ClassVar[slice] = slice(2, 4)

    def array(self, img: Image.Image) -> np.ndarray:
        x: np.ndarray = np.asarray(img, dtype=np.float32) / np.float32(255)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def settings(self) -> dict:
        return {"layout": self.name, "mean": list(self.mean), "std": list(self.std)}


# -- how the model's output becomes codes ---------------------------------------------------------
@dataclass(frozen=True)
class CosineCodes:
    """Float rows, L2-normalised and scored by inner product."""

    metric: ClassVar[Metric] = IP

    def dim(self, width: int) -> int:
        return width

    def problem(self, output: np.ndarray) -> str | None:
        if not np.issubdtype(output.dtype, np.floating):
            return f"metric = cosine needs a float output, the model gives {output.dtype}"
        return None

    def codes(self, output: np.ndarray) -> np.ndarray:
        return l2_normalise(output)

    def describe(self, width: int) -> str:
        return f"{width}-d"

    def settings(self) -> dict:
        return {"metric": "cosine"}


@dataclass(frozen=True)
class HammingCodes:
    """``bits`` values per image, each above zero a 1 bit, packed with ``np.packbits`` and scored by Hamming."""

    bits: int
    metric: ClassVar[Metric] = HAMMING

    def dim(self, width: int) -> int:
        return self.bits

    def problem(self, output: np.ndarray) -> str | None:
        if output.shape[1] != self.bits:
            return f"bits = {self.bits}, but the output has {output.shape[1]} values per image"
        return None

    def codes(self, output: np.ndarray) -> np.ndarray:
        return np.packbits(np.asarray(output) > 0, axis=1)

    def describe(self, width: int) -> str:
        return f"{self.bits}-bit hash"

    def settings(self) -> dict:
        return {"metric": "hamming", "bits": self.bits}


# -- the spec file --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxSpec:
    path: Path  # the spec file, resolved
    name: str
    onnx: Path  # the model file, resolved
    layout: NhwcUint8 | NchwFloat
    resize: Square | ShortSide | ShortSideCrop
    codes: CosineCodes | HammingCodes
    output: str | None

    def settings(self) -> dict:
        """Everything the spec says about the codes, for cache keys (the model enters by its digest)."""
        return {"name": self.name, **self.layout.settings(), **self.resize.settings(), **self.codes.settings(),
                "output": self.output}

    def prepare(self, img: Image.Image) -> np.ndarray:
        return self.layout.array(self.resize(img))


# key -> (what it must be, a check of the value) ; the keys that only some specs have say which.
_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "text": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "rgb": ("a list of 3 numbers", lambda v: isinstance(v, list) and len(v) == 3
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)),
}
KEYS = {"name": "text", "onnx": "text", "layout": "text", "resize": "text", "size": "int", "interpolation": "text",
        "metric": "text", "crop_pct": "number", "mean": "rgb", "std": "rgb", "bits": "int", "output": "text"}
CONDITIONAL = {"crop_pct": "resize = \"short_side_crop\"", "mean": "layout = \"nchw_float\"",
               "std": "layout = \"nchw_float\"", "bits": "metric = \"hamming\""}


class _Reader:
    """Typed access to the spec's keys; every problem is one ConfigError naming the file and the key."""

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data
        self.used: set[str] = set()

    def error(self, problem: str) -> ConfigError:
        return ConfigError(f"method spec {self.path}: {problem}")

    def get(self, key: str, required: bool = True) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(f"missing key {key!r}" + (f" (needed with {CONDITIONAL[key]})"
                                                           if key in CONDITIONAL else ""))
            return None
        what, fits = _KINDS[KEYS[key]]
        value = self.data[key]
        if not fits(value):
            raise self.error(f"{key!r} must be {what} (got {value!r})")
        return value

    def choice(self, key: str, options: dict[str, Any]) -> Any:
        value = self.get(key)
        if value not in options:
            raise self.error(f"{key} = {value!r} is not one of {', '.join(options)}")
        return options[value]

    def leftovers(self) -> None:
        for key in self.data:
            if key not in KEYS:
                raise self.error(f"unknown key {key!r} (keys: {', '.join(KEYS)})")
            if key not in self.used:
                raise self.error(f"{key!r} applies only with {CONDITIONAL[key]}")


def read_spec(path: str | Path) -> OnnxSpec:
    """Parse and check a spec's keys (not yet its model)."""
    shown = Path(path).expanduser()
    try:
        spec_path = shown.resolve(strict=True)
        data = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"method spec {shown}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"method spec {shown}: not valid TOML ({err})") from None
    r = _Reader(spec_path, data)
    name = r.get("name")
    if not NAME_PATTERN.fullmatch(name) or name.lower().endswith(SPEC_SUFFIX):
        raise r.error(f"name {name!r} must start with a letter and hold only letters, digits, '_', '.' or '-'")
    onnx = (spec_path.parent / Path(r.get("onnx")).expanduser()).resolve()
    layout = r.choice("layout", LAYOUTS)(r)
    resize = r.choice("resize", RESIZES)(r)
    codes = r.choice("metric", METRICS)(r)
    spec = OnnxSpec(spec_path, name, onnx, layout, resize, codes, r.get("output", required=False))
    r.leftovers()
    return spec


def _size_and_filter(r: _Reader) -> tuple[int, Image.Resampling]:
    size = r.get("size")
    if not 1 <= size <= MAX_SIDE:
        raise r.error(f"size must be between 1 and {MAX_SIDE} (got {size})")
    return size, r.choice("interpolation", RESAMPLING)


def _short_side_crop(r: _Reader) -> ShortSideCrop:
    size, resample = _size_and_filter(r)
    crop_pct = float(r.get("crop_pct"))
    if not 0 < crop_pct <= 1:
        raise r.error(f"crop_pct must be above 0 and at most 1 (got {crop_pct})")
    return ShortSideCrop(size, resample, crop_pct)


def _nchw_float(r: _Reader) -> NchwFloat:
    mean, std = _three_floats(r, "mean"), _three_floats(r, "std")
    if not all(s > 0 for s in std):
        raise r.error(f"every std must be above 0 (got {list(std)})")
    return NchwFloat(mean, std)


def _three_floats(r: _Reader, key: str) -> tuple[float, float, float]:
    first, second, third = map(float, r.get(key))
    return first, second, third


def _hamming(r: _Reader) -> HammingCodes:
    bits = r.get("bits")
    if bits < 8 or bits % 8:
        raise r.error(f"bits must be a positive multiple of 8 (got {bits})")
    return HammingCodes(bits)


# Each word a key may take -> what builds its object from the spec (reading the keys that go with it).
LAYOUTS: dict[str, Callable[[_Reader], NhwcUint8 | NchwFloat]] = {
    "nhwc_uint8": lambda r: NhwcUint8(), "nchw_float": _nchw_float}
RESIZES: dict[str, Callable[[_Reader], Square | ShortSide | ShortSideCrop]] = {
    "square": lambda r: Square(*_size_and_filter(r)), "short_side": lambda r: ShortSide(*_size_and_filter(r)),
    "short_side_crop": _short_side_crop}
METRICS: dict[str, Callable[[_Reader], CosineCodes | HammingCodes]] = {
    "cosine": lambda r: CosineCodes(), "hamming": _hamming}


def is_spec_path(method: str) -> bool:
    """Whether a method name given on the command line is the path of a spec file."""
    return str(method).lower().endswith(SPEC_SUFFIX)

"""Stage 2: modified copies of the originals, made by replayable op chains.

Like torchvision transforms v2, every op separates random parameter sampling
(``make_params``) from deterministic application (``apply``). Each copy records
its exact parameters as JSON, so any copy can be replayed pixel-identically and
a UI can apply an op with hand-picked parameters.

Positions are stored as fractions in [0, 1] of the free range, so a parameter
set means the same thing on any image size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms import InterpolationMode

from malle.cache import write_bytes
from malle.errors import BadImage, ConfigError
from malle.imageio import MAX_ASPECT, encode_jpeg, load_rgb
from malle.naming import unique_name

COPY_JPEG_QUALITY = 95  # storage quality of copies; the jpeg op compresses harder on purpose
WATERMARK_TEXT = "Malle Project"
MANIFEST_COLUMNS = ["file", "source", "class", "copy_index", "chain_length", "ops", "chain", "chain_lengths"]
COPY_SUFFIX = ".JPEG"
# No op makes a side longer than this: 20 x the largest resize target, far below JPEG's 65,535.
MAX_OUTPUT_SIDE = MAX_ASPECT * 384

Size = tuple[int, int]  # (width, height), Pillow's order


class Distribution(ABC):
    """How ``make_params`` draws one parameter; values are JSON-exact so replays match."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any: ...

    @abstractmethod
    def values_within(self, low: float, high: float) -> bool:
        """Whether every value this draws lies in [low, high]."""


@dataclass(frozen=True)
class Uniform(Distribution):
    low: float
    high: float

    def sample(self, rng):
        # Rounded so the value survives a JSON round trip exactly.
        return round(float(rng.uniform(self.low, self.high)), 4)

    def values_within(self, low, high):
        return low <= self.low <= self.high <= high


@dataclass(frozen=True)
class IntUniform(Distribution):
    low: int
    high: int

    def sample(self, rng):
        return int(rng.integers(self.low, self.high + 1))

    def values_within(self, low, high):
        return low <= self.low <= self.high <= high


@dataclass(frozen=True)
class OneOf(Distribution):
    choices: tuple

    def sample(self, rng):
        return int(rng.choice(self.choices))

    def values_within(self, low, high):
        return all(low <= c <= high for c in self.choices)


@dataclass(frozen=True)
class Fixed(Distribution):
    """The reference experiment fixes some parameters (watermark size, occluder side)."""

    value: Any

    def sample(self, rng):
        return self.value

    def values_within(self, low, high):
        return low <= self.value <= high


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of an op: the range a UI offers and the distribution ``make_params`` draws from.

    ``sample`` is None only for a parameter that an op derives itself (blur's kernel
    follows the image size). Ranges are checked once, here.
    """

    name: str
    kind: str  # "int" | "float" | "choice": the UI control
    default: Any
    low: float | None = None  # inclusive range for int/float
    high: float | None = None
    choices: tuple = ()  # for "choice"
    help: str = ""
    sample: Distribution | None = None

    def __post_init__(self):
        if self.kind == "choice":
            low, high = min(self.choices), max(self.choices)
            if self.default not in self.choices:
                raise ValueError(f"{self.name}: default {self.default!r} is not among {self.choices}")
        else:
            low, high = self.low, self.high
            if not low <= self.default <= high:
                raise ValueError(f"{self.name}: default {self.default} outside [{low}, {high}]")
        if self.sample is not None and not self.sample.values_within(low, high):
            raise ValueError(f"{self.name}: sampling {self.sample} leaves the range [{low}, {high}]")


def float_param(name: str, low: float, high: float, default: float, help: str = "",
                sample: Distribution | None = None) -> ParamSpec:
    """A float parameter drawn uniformly from its whole range unless ``sample`` says otherwise."""
    return ParamSpec(name, "float", default, low, high, help=help, sample=sample or Uniform(low, high))


def int_param(name: str, low: int, high: int, default: int, help: str = "",
              sample: Distribution | None = None) -> ParamSpec:
    return ParamSpec(name, "int", default, low, high, help=help, sample=sample or IntUniform(low, high))


def choice_param(name: str, choices: tuple, default: Any, help: str = "", derived: bool = False) -> ParamSpec:
    """``derived``: the op sets this parameter itself in ``make_params``."""
    return ParamSpec(name, "choice", default, choices=choices, help=help, sample=None if derived else OneOf(choices))


def _offset(fraction: float, free: int) -> int:
    """A fraction of the free range, in whole pixels (0 when there is no room)."""
    return int(round(fraction * max(0, free)))


FRACTION_HELP = "fraction of the free range (0 = left/top, 1 = right/bottom)"


def _fraction_spec(name: str) -> ParamSpec:
    return float_param(name, 0.0, 1.0, 0.5, help=f"{name} position as a {FRACTION_HELP}")


class Op(ABC):
    name: ClassVar[str]  # filename token: lowercase ascii letters only
    label: ClassVar[str]
    params: ClassVar[tuple[ParamSpec, ...]]

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


CROP_SIZES = (256, 384)
CROP_HELP = "side of the square crop; pads black if larger"


class CenterCrop(Op):
    name = "centercrop"
    label = "Center crop"
    params = (choice_param("size", CROP_SIZES, 256, help=CROP_HELP),)

    def apply(self, img, params):
        side = int(params["size"])
        return F.center_crop(img, [side, side])  # pads with black where the image is smaller

    def output_size(self, size, params):
        return (int(params["size"]),) * 2


class RandomCrop(Op):
    name = "randomcrop"
    label = "Random crop"
    params = (
        choice_param("size", CROP_SIZES, 256, help=CROP_HELP),
        _fraction_spec("x"),
        _fraction_spec("y"),
    )

    def apply(self, img, params):
        side = int(params["size"])
        # Like RandomCrop(pad_if_needed=True): a short dimension is padded by the
        # shortfall on BOTH sides, so the free range there is |dim - side|.
        left = _padded_offset(params["x"], img.width, side)
        top = _padded_offset(params["y"], img.height, side)
        return img.crop((left, top, left + side, top + side))  # Pillow fills outside with black

    def output_size(self, size, params):
        return (int(params["size"]),) * 2


def _padded_offset(fraction: float, dim: int, side: int) -> int:
    """Crop origin in the unpadded image's coordinates (negative inside the padding)."""
    pad = max(0, side - dim)
    return _offset(fraction, dim + 2 * pad - side) - pad


class Resize(Op):
    name = "resize"
    label = "Random resize"
    params = (int_param("size", 256, 384, 256, help="shorter side after resizing; aspect is kept"),)

    def apply(self, img, params):
        width, height = self.output_size(img.size, params)
        return F.resize(img, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True)

    def output_size(self, size, params):
        # torchvision Resize(int): the shorter side becomes `size`, the longer is truncated.
        # The longer side is also capped, so no input shape can make this op ask for a huge
        # image (inputs are at most 1:MAX_ASPECT, so the cap only guards images from elsewhere).
        short = int(params["size"])
        width, height = size
        if width <= height:
            return short, min(int(short * height / width), MAX_OUTPUT_SIDE)
        return min(int(short * width / height), MAX_OUTPUT_SIDE), short


class Rotate(Op):
    name = "rotate"
    label = "Rotation"
    params = (float_param("angle", -15.0, 15.0, 0.0, help="degrees, counter-clockwise; corners fill black"),)

    def apply(self, img, params):
        angle = float(params["angle"])
        return F.rotate(img, angle, interpolation=InterpolationMode.BILINEAR, expand=False, fill=0)


BLUR_KERNELS = (3, 5, 7)


def blur_kernel_for(size: Size) -> int:
    """Bigger images get a bigger kernel so the blur is visible at any scale."""
    short = min(size)
    return 3 if short < 256 else 5 if short < 512 else 7


class Blur(Op):
    name = "blur"
    label = "Gaussian blur"
    params = (
        choice_param("kernel", BLUR_KERNELS, 5, help="kernel side; sampled from the shorter side", derived=True),
        float_param("sigma", 0.1, 2.0, 1.0, help="standard deviation in pixels"),
    )

    def make_params(self, rng, size):
        return {"kernel": blur_kernel_for(size), **super().make_params(rng, size)}

    def apply(self, img, params):
        kernel, sigma = int(params["kernel"]), float(params["sigma"])
        return F.gaussian_blur(img, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


class Color(Op):
    name = "color"
    label = "Brightness & contrast"
    params = (
        float_param("brightness", 0.8, 1.2, 1.0, help="1 keeps the image unchanged"),
        float_param("contrast", 0.6, 1.4, 1.0, help="1 keeps the image unchanged"),
    )

    def apply(self, img, params):
        brighter = F.adjust_brightness(img, float(params["brightness"]))
        return F.adjust_contrast(brighter, float(params["contrast"]))


class Hue(Op):
    name = "hue"
    label = "Hue & saturation"
    params = (
        float_param("hue", -0.5, 0.5, 0.0, help="shift of the hue circle; ±0.5 is the opposite hue"),
        float_param("saturation", 0.6, 1.4, 1.0, help="1 keeps the image unchanged"),
    )

    def apply(self, img, params):
        shifted = F.adjust_hue(img, float(params["hue"]))
        return F.adjust_saturation(shifted, float(params["saturation"]))


class Watermark(Op):
    name = "watermark"
    label = "Watermark"
    params = (
        _fraction_spec("x"),
        _fraction_spec("y"),
        int_param("font_size", 10, 200, 80, help=f"size of the text {WATERMARK_TEXT!r}", sample=Fixed(80)),
        int_param("opacity", 0, 255, 120, help="alpha of the white text out of 255", sample=Fixed(120)),
    )

    def apply(self, img, params):
        # Pillow's built-in scalable font: identical output on every machine.
        # Loaded per call (~0.1 ms) because FreeType faces are not safe to share across threads.
        font = ImageFont.load_default(size=int(params["font_size"]))
        left, top, right, bottom = font.getbbox(WATERMARK_TEXT)
        x = _offset(params["x"], img.width - (right - left))
        y = _offset(params["y"], img.height - (bottom - top))
        overlay = Image.new("RGBA", img.size, (255, 255, 255, 0))
        # Shift by the bbox offset so the visible text's top-left lands on (x, y).
        fill = (255, 255, 255, int(params["opacity"]))
        ImageDraw.Draw(overlay).text((x - left, y - top), WATERMARK_TEXT, font=font, fill=fill)
        return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


class Jpeg(Op):
    name = "jpeg"
    label = "JPEG"
    params = (int_param("quality", 30, 80, 55, help="JPEG quality; lower means stronger artefacts"),)

    def apply(self, img, params):
        data = encode_jpeg(img, int(params["quality"]))
        with Image.open(io.BytesIO(data)) as decoded:
            return decoded.convert("RGB")


class Occlude(Op):
    name = "occlude"
    label = "Occlusion"
    params = (
        int_param("size", 1, 512, 80, help="side of the black square; clipped to the image", sample=Fixed(80)),
        _fraction_spec("x"),
        _fraction_spec("y"),
    )

    def apply(self, img, params):
        side = int(params["size"])
        left = _offset(params["x"], img.width - side)
        top = _offset(params["y"], img.height - side)
        out = img.copy()
        ImageDraw.Draw(out).rectangle((left, top, left + side - 1, top + side - 1), fill=(0, 0, 0))
        return out


OPS: dict[str, Op] = {
    op.name: op
    for op in (CenterCrop(), RandomCrop(), Resize(), Rotate(), Blur(), Color(), Hue(), Watermark(), Jpeg(), Occlude())
}
# The reference experiment's ten; reproduction chains draw from these unless --ops says otherwise.
REFERENCE_OPS = tuple(OPS)


def get_op(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; valid ops: {', '.join(OPS)}") from None


@dataclass(frozen=True)
class Step:
    op: str
    params: dict


def apply_chain(img: Image.Image, chain: Sequence[Step]) -> Image.Image:
    out = img
    for step in chain:
        out = get_op(step.op).apply(out, step.params)
    return out.copy() if out is img else out  # never hand back the caller's own object


def sample_chain(
    rng: np.random.Generator,
    size: Size,
    ops: Sequence[str] = tuple(OPS),
    lengths: tuple[int, int] = (1, 5),
) -> list[Step]:
    """k distinct ops in random order, k uniform on lengths[0]..min(lengths[1], len(ops))."""
    _check_lengths(lengths, ops)
    k = IntUniform(lengths[0], min(lengths[1], len(ops))).sample(rng)
    return sample_params(rng, [ops[i] for i in rng.permutation(len(ops))[:k]], size)


def sample_params(rng: np.random.Generator, ops: Sequence[str], size: Size) -> list[Step]:
    """Random parameters for ops applied in this order, each sampled against the size it will see."""
    chain = []
    for name in ops:
        op = get_op(name)
        params = op.make_params(rng, size)
        chain.append(Step(name, params))
        size = op.output_size(size, params)
    return chain


def _check_lengths(lengths: tuple[int, int], ops: Sequence[str]) -> None:
    if len(set(ops)) != len(ops):
        raise ConfigError(f"ops must be distinct, got {list(ops)}")
    for name in ops:
        get_op(name)
    low, high = lengths
    if not 1 <= low <= min(high, len(ops)):
        raise ConfigError(f"chain lengths {low}..{high} impossible with {len(ops)} op(s)")


def chain_to_json(chain: Sequence[Step]) -> str:
    return json.dumps([{"op": s.op, "params": s.params} for s in chain], sort_keys=True, separators=(",", ":"))


def chain_from_json(s: str) -> list[Step]:
    steps = json.loads(s)
    if not isinstance(steps, list) or not all(isinstance(d, dict) and {"op", "params"} <= d.keys() for d in steps):
        raise ValueError(f"not a chain (expected a list of {{op, params}} objects): {s[:80]!r}")
    for d in steps:
        get_op(d["op"])
    return [Step(d["op"], dict(d["params"])) for d in steps]


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_chain(chain: Sequence[Step]) -> str:
    """E.g. ``rotate(angle=-7.2) → jpeg(quality=41)``."""
    if not chain:
        return "(no ops)"
    parts = []
    for step in chain:
        args = ", ".join(f"{k}={_format_value(v)}" for k, v in step.params.items())
        parts.append(f"{step.op}({args})")
    return " → ".join(parts)


@dataclass(frozen=True)
class AugmentConfig:
    copies: tuple[int, ...] = (4, 8)  # each original's copy count is drawn from these
    chain_lengths: tuple[int, int] = (1, 5)
    ops: tuple[str, ...] = REFERENCE_OPS

    def __post_init__(self):
        # Tuples even when built from JSON lists, so configs compare and hash equal.
        for name in ("copies", "chain_lengths", "ops"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        # Fail at configuration time, not halfway through a long run.
        if not self.copies or any(int(n) < 1 for n in self.copies):
            raise ConfigError(f"copies must be positive counts, got {self.copies}")
        _check_lengths(self.chain_lengths, self.ops)

    def describe(self) -> str:
        low, high = self.chain_lengths
        return f"uniform {low}..{min(high, len(self.ops))}"

    def as_dict(self) -> dict:
        return {"copies": list(self.copies), "chain_lengths": list(self.chain_lengths), "ops": list(self.ops)}


TOKEN = re.compile(r"[^_]+")
COPY_NAME = re.compile(r"(?P<stem>[^_]+_[^_]+(?:_[a-z]+)+?)(?:-(?P<n>\d+))?\.jpe?g", re.IGNORECASE)


def copy_filename(class_token: str, instance_token: str, chain: Sequence[Step], taken: set[str]) -> str:
    """``{class}_{instance}_{op1}_..._{opN}.JPEG``, with ``-2``, ``-3``... on a clash."""
    if not chain:
        raise ValueError("a copy needs at least one op (its name would equal the original's)")
    for token in (class_token, instance_token):
        if not TOKEN.fullmatch(token):
            raise ValueError(f"filename token must be non-empty without '_': {token!r}")
    stem = "_".join([class_token, instance_token, *(step.op for step in chain)])
    return unique_name(stem, COPY_SUFFIX, taken)


def parse_copy_filename(name: str) -> tuple[str, str, list[str]]:
    """Inverse of ``copy_filename``: (class_token, instance_token, op names)."""
    match = COPY_NAME.fullmatch(name)
    if not match:
        raise ValueError(f"not a copy filename ({{class}}_{{instance}}_{{op}}[_{{op}}...][-N].JPEG): {name!r}")
    class_token, instance_token, *ops = match["stem"].split("_")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"copy filename {name!r} names unknown op(s) {unknown}; valid ops: {', '.join(OPS)}")
    return class_token, instance_token, ops


def replay(original: Image.Image, chain_json: str) -> Image.Image:
    """Re-apply a manifest row's chain to its original."""
    return apply_chain(original, chain_from_json(chain_json))


def make_copies(
    originals: pd.DataFrame,
    originals_dir: Path,
    out_dir: Path,
    config: AugmentConfig,
    seed: int,
    progress: Callable[..., Any] | None = None,
) -> pd.DataFrame:
    """Write each original's copies into ``out_dir``; return the manifest (one row per copy)."""
    _check_unique_identities(originals)
    records = originals.to_dict("records")
    bar = progress(total=len(records), desc="copies") if progress else None
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            jobs = [pool.submit(_copies_of, row, Path(originals_dir), Path(out_dir), config, seed) for row in records]
            rows = []
            # Collect in submission order: the manifest never depends on thread scheduling.
            for job in jobs:
                rows.extend(job.result())
                if bar:
                    bar.update(1)
    finally:
        if bar:
            bar.close()
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _check_unique_identities(originals: pd.DataFrame) -> None:
    # Copy names come from (class_token, instance); two originals sharing both would
    # overwrite each other's copies and make instance-level matching ambiguous.
    dupes = originals[originals.duplicated(["class_token", "instance"], keep=False)]
    if len(dupes):
        raise ValueError(f"originals share class_token+instance: {sorted(dupes['file'])[:5]}")


def copy_rng(seed: int, original: str) -> np.random.Generator:
    """One generator per original, seeded by the run seed and the original's file name.

    Its copies then depend on nothing else: not on how many copies other originals
    got, nor on which other images the dataset holds.
    """
    words = np.frombuffer(hashlib.sha256(original.encode()).digest(), dtype=np.uint32)
    return np.random.default_rng([seed, *words.tolist()])


def _copies_of(row: dict, originals_dir: Path, out_dir: Path, config: AugmentConfig, seed: int) -> list:
    rng = copy_rng(seed, row["file"])
    n_copies = int(rng.choice(config.copies))
    try:
        img = load_rgb(originals_dir / row["file"])
    except BadImage as err:
        raise BadImage(f"{row['file']}: {err}") from err
    return write_copies(img, rng, n_copies, (row["class_token"], row["instance"]), row["file"], row["class"], config,
                        out_dir)


def write_copies(img: Image.Image, rng: np.random.Generator, n: int, tokens: tuple[str, str], source: str, label: str,
                 config: AugmentConfig, out_dir: Path) -> list[dict]:
    """``n`` modified copies of ``img`` with chains drawn from ``config``, written as JPEGs; their manifest rows.

    ``source`` is the original's file (empty for a distractor, whose original is not in the database).
    """
    taken: set[str] = set()
    rows = []
    for copy_index in range(n):
        chain = sample_chain(rng, img.size, config.ops, config.chain_lengths)
        name = copy_filename(*tokens, chain, taken)
        write_bytes(out_dir / name, encode_jpeg(apply_chain(img, chain), COPY_JPEG_QUALITY))
        rows.append({"file": name, "source": source, "class": label, "copy_index": copy_index,
                     "chain_length": len(chain), "ops": "|".join(step.op for step in chain),
                     "chain": chain_to_json(chain), "chain_lengths": config.describe()})
    return rows


# At the end: malle.edits builds on the Op machinery above and registers its ops into OPS when imported,
# whichever of the two modules is imported first.
import malle.edits  # noqa: E402,F401

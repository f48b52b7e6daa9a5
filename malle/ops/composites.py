"""Composite edits, the hardest DISC21 queries: the original combined with other pictures, captions and UI.

Each op records what it pasted where, so a copy replays from the manifest's chain JSON alone (given the
dataset folder): ``donor`` names the other picture(s) by their path relative to the dataset (several in a
collage, joined by ``|``), and ``left, top, right, bottom`` is the box the original occupies in the output
(for ``overlay`` and ``emoji``, the box of what was laid over it). ``apply`` recomputes the box from the other
parameters, so a UI that changes them gets a consistent edit; the recorded box is what the failure gallery draws.

What each op uses:

- ``inset``: the original shrunk to 20–60 % of its size and pasted into a donor (Pillow).
- ``overlay``: a donor laid over 10–50 % of the original's area with an opacity (Pillow).
- ``meme``: caption bars with text above (and below) the photo (Pillow, with AugLy's meme font; AugLy's own
  ``meme_format`` fails on Python 3.12).
- ``emoji``: one of AugLy's Twemoji images over the photo (AugLy ``overlay_emoji``).
- ``collage``: the original as one tile of a 2x2 or 3x3 grid of donors (Pillow).
- ``post``: the photo in a social-post screenshot with its UI (AugLy ``overlay_onto_screenshot`` and its
  templates) and a caption written above it (Pillow, AugLy's font).

Donors are dataset images that are neither originals, distractor sources, database distractors nor background
images (``RunContext.donor_images``), handed to ``make_params`` and ``apply`` in an ``OpContext``. Without donors
(a dataset with no spare image, the lab, severity sweeps) ``donor`` is empty and a pattern generated from
``seed`` stands in for the other picture; the copies stage says so once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import augly.image.functional as augly_image
import augly.utils as augly_utils
import numpy as np
from augly.image import utils as augly_imutils
from PIL import Image, ImageDraw, ImageFont, ImageOps

from malle.errors import BadImage, ConfigError
from malle.io.images import load_rgb
from malle.ops.params import (
    IntRange,
    IntUniform,
    OneOf,
    ParamSpec,
    Size,
    Sweep,
    Uniform,
    choice_param,
    float_param,
    int_param,
    placed,
    position_params,
)
from malle.ops.reference import MAX_OUTPUT_SIDE
from malle.ops.registry import Op, ops_defined_in, register

CAPTION_WORDS = ("when", "you", "the", "me", "finally", "nobody", "this", "monday", "cat", "weekend", "mood",
                 "every", "time", "still", "just", "real", "life", "us", "again", "look")
DONOR_SEPARATOR = "|"
BOX = ("left", "top", "right", "bottom")


@dataclass(frozen=True)
class OpContext:
    """What composite ops need beyond the image: the donor images, as paths relative to ``root``."""

    root: Path | None = None
    donors: tuple[str, ...] = ()

    def image(self, rel: str) -> Image.Image:
        """A donor's pixels (shared and cached: callers never draw on it)."""
        if self.root is None:
            raise ConfigError(f"the donor image {rel!r} can only be re-made with its dataset folder")
        return _load_donor(str(self.root / rel))

    def usable(self, rel: str) -> bool:
        try:
            self.image(rel)
        except BadImage:
            return False
        return True


NO_CONTEXT = OpContext()


@functools.lru_cache(maxsize=64)
def _load_donor(path: str) -> Image.Image:
    return load_rgb(Path(path))


class ContextOp(Op):
    """An op whose parameters and pixels depend on more than the image: donor pictures (an ``OpContext``)."""

    def make_params(self, rng: np.random.Generator, size: Size, context: OpContext = NO_CONTEXT) -> dict:
        params = super().make_params(rng, size)
        params["donor"] = draw_donors(rng, context, self.donor_count(params))
        return self.with_box(params, size)

    def donor_count(self, params: dict) -> int:
        return 1

    def apply(self, img: Image.Image, params: dict, context: OpContext = NO_CONTEXT) -> Image.Image:
        check_bounds(self, params)
        return self.compose(img, params, context)

    def compose(self, img: Image.Image, params: dict, context: OpContext) -> Image.Image:
        raise NotImplementedError

    def box(self, size: Size, params: dict) -> tuple[int, int, int, int]:
        """Where the original (or what covers it) lies in the output."""
        raise NotImplementedError

    def with_box(self, params: dict, size: Size) -> dict:
        return {**params, **dict(zip(BOX, self.box(size, params), strict=True))}


def draw_donors(rng: np.random.Generator, context: OpContext, count: int) -> str:
    """``count`` donors joined by ``|``; "" when the context has none (patterns stand in)."""
    if not context.donors:
        return ""
    return DONOR_SEPARATOR.join(draw_donor(rng, context) for _ in range(count))


def draw_donor(rng: np.random.Generator, context: OpContext) -> str:
    """A donor drawn from the context, or "" (a generated pattern) when there is none or it cannot be read."""
    if not context.donors:
        return ""
    rel = context.donors[int(rng.integers(len(context.donors)))]
    return rel if context.usable(rel) else ""


def check_bounds(op: Op, params: dict) -> None:
    """Every parameter the op does not derive itself is one its spec offers: a one-line ConfigError otherwise.

    Derived ones are left alone: ``apply`` recomputes the box, and the donor is a path.
    """
    for spec in op.params:
        value = params.get(spec.name, spec.default)
        if not spec.derived and value not in spec.kind:
            raise ConfigError(f"{op.name}: {spec.name}={value} outside {spec.kind}")


def recorded_params() -> tuple[ParamSpec, ...]:
    """What every composite sets itself and records, so a copy replays: its donor(s) and its box."""
    donor = choice_param("donor", ("",), "", help="the other picture(s), relative to the dataset; empty: a pattern",
                         derived=True)
    box = (ParamSpec(name, IntRange(0, MAX_OUTPUT_SIDE), 0, help="box of the pasted region, recorded") for name in BOX)
    return donor, *box


def seed_param() -> ParamSpec:
    return int_param("seed", 0, 9999, 0, help="which generated pattern or caption")


def backdrop(context: OpContext, rel: str, size: Size, seed: int) -> Image.Image:
    """The donor scaled and cropped to ``size``, or a generated pattern when there is no donor."""
    if rel:
        return ImageOps.fit(context.image(rel), size, Image.Resampling.BILINEAR)
    return pattern(size, seed)


def pattern(size: Size, seed: int) -> Image.Image:
    """Diagonal stripes of two random colours: a stand-in picture that no descriptor mistakes for a photo."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (2, 3))
    period = int(rng.integers(8, 48))
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    stripes = ((xs + ys) // period) % 2
    return Image.fromarray(colours[stripes].astype(np.uint8), "RGB")


def caption(seed: int, words: int = 4) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(CAPTION_WORDS, words)).upper()


def fitted_font(text: str, width: int, height: int) -> ImageFont.FreeTypeFont:
    """AugLy's meme font at the largest size (at most ``height``) whose ``text`` fits ``width``."""
    size = max(6, height)
    while True:
        font = ImageFont.truetype(augly_utils.MEME_DEFAULT_FONT, size)
        left, _, right, _ = font.getbbox(text)
        if right - left <= width or size <= 6:
            return font
        size = max(6, int(size * 0.9))


def write_centered(draw: ImageDraw.ImageDraw, band: tuple[int, int, int, int], text: str, fill) -> None:
    left, top, right, bottom = band
    font = fitted_font(text, int((right - left) * 0.92), int((bottom - top) * 0.6))
    draw.text(((left + right) // 2, (top + bottom) // 2), text, font=font, fill=fill, anchor="mm")


def scaled(size: Size, scale: float) -> Size:
    return max(1, int(round(size[0] * scale))), max(1, int(round(size[1] * scale)))


@register
class Inset(ContextOp):
    name = "inset"
    label = "Inset into another picture"
    params = (
        float_param("scale", 0.1, 1.0, 0.4, help="the original's side as a fraction of the picture's",
                    sample=Uniform(0.2, 0.6)),
        *position_params(),
        seed_param(), *recorded_params(),
    )
    sweep = Sweep("scale", (1.0, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15),
                  lambda v, size, rng: sweep_params(Inset, size, rng, {"scale": float(v)}))

    def box(self, size, params):
        return placed(size, scaled(size, float(params["scale"])), params["x"], params["y"])

    def compose(self, img, params, context):
        canvas = backdrop(context, params["donor"], img.size, int(params["seed"])).copy()
        left, top, right, bottom = self.box(img.size, params)
        canvas.paste(img.resize((right - left, bottom - top), Image.Resampling.BILINEAR), (left, top))
        return canvas


@register
class Overlay(ContextOp):
    name = "overlay"
    label = "Picture laid over"
    params = (
        float_param("area", 0.0, 0.9, 0.3, help="share of the original's area covered", sample=Uniform(0.1, 0.5)),
        float_param("opacity", 0.0, 1.0, 0.8, help="1 hides what is under it", sample=Uniform(0.4, 1.0)),
        *position_params(),
        seed_param(), *recorded_params(),
    )
    sweep = Sweep("area", (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7),
                  lambda v, size, rng: sweep_params(Overlay, size, rng, {"area": float(v), "opacity": 0.8}))

    def box(self, size, params):
        return placed(size, scaled(size, math.sqrt(float(params["area"]))), params["x"], params["y"])

    def compose(self, img, params, context):
        left, top, right, bottom = self.box(img.size, params)
        out = img.copy()
        if params["area"] <= 0:
            return out
        region = out.crop((left, top, right, bottom))
        cover = backdrop(context, params["donor"], region.size, int(params["seed"]))
        out.paste(Image.blend(region, cover, float(params["opacity"])), (left, top))
        return out


@register
class Meme(ContextOp):
    name = "meme"
    label = "Meme captions"
    params = (
        float_param("bar", 0.0, 0.5, 0.2, help="caption bar height as a fraction of the photo's",
                    sample=Uniform(0.1, 0.3)),
        choice_param("below", (0, 1), 0, help="1 adds a second bar below"),
        seed_param(), *recorded_params(),
    )
    sweep = Sweep("bar", (0, 0.1, 0.15, 0.2, 0.3, 0.4),
                  lambda v, size, rng: sweep_params(Meme, size, rng, {"bar": float(v), "below": 1}))

    def donor_count(self, params):
        return 0

    def bar_height(self, size: Size, params: dict) -> int:
        return int(round(float(params["bar"]) * size[1]))

    def box(self, size, params):
        bar = self.bar_height(size, params)
        return 0, bar, size[0], bar + size[1]

    def output_size(self, size, params):
        bar = self.bar_height(size, params)
        return size[0], size[1] + bar * (1 + int(params["below"]))

    def compose(self, img, params, context):
        w, h = img.size
        bar = self.bar_height(img.size, params)
        canvas = Image.new("RGB", self.output_size(img.size, params), (255, 255, 255))
        canvas.paste(img, (0, bar))
        if bar >= 4:
            draw = ImageDraw.Draw(canvas)
            seed = int(params["seed"])
            write_centered(draw, (0, 0, w, bar), caption(seed), (0, 0, 0))
            if int(params["below"]):
                write_centered(draw, (0, bar + h, w, 2 * bar + h), caption(seed + 1), (0, 0, 0))
        return canvas


def twemojis() -> tuple[Path, ...]:
    """AugLy's Twemoji images, in a fixed order (the ``emoji`` parameter indexes it)."""
    return tuple(sorted(Path(augly_utils.EMOJI_DIR).rglob("*.png")))


EMOJIS = twemojis()


@register
class Emoji(ContextOp):
    name = "emoji"
    label = "Emoji"
    params = (
        int_param("emoji", 0, len(EMOJIS) - 1, 0, help="which of AugLy's Twemoji images"),
        float_param("size", 0.0, 1.0, 0.3, help="emoji height as a fraction of the photo's",
                    sample=Uniform(0.15, 0.5)),
        float_param("opacity", 0.0, 1.0, 1.0, sample=Uniform(0.7, 1.0)),
        *position_params(),
        *recorded_params(),
    )
    sweep = Sweep("size", (0, 0.15, 0.25, 0.35, 0.5, 0.7),
                  lambda v, size, rng: sweep_params(Emoji, size, rng, {"size": float(v), "opacity": 1.0}))

    def donor_count(self, params):
        return 0

    def box(self, size, params):
        emoji_w, emoji_h = _emoji_size(int(params["emoji"]))
        height = max(1, int(size[1] * float(params["size"])))  # as AugLy's overlay_image sizes it
        return placed(size, (int(emoji_w * height / emoji_h), height), params["x"], params["y"])

    def compose(self, img, params, context):
        left, top, _, _ = self.box(img.size, params)
        # AugLy takes the top-left corner as a fraction of the size and truncates: aim at pixel centres.
        return augly_image.overlay_emoji(img, emoji_path=str(EMOJIS[int(params["emoji"])]),
                                         opacity=float(params["opacity"]), emoji_size=float(params["size"]),
                                         x_pos=min(1.0, (left + 0.5) / img.width),
                                         y_pos=min(1.0, (top + 0.5) / img.height)).convert("RGB")


@functools.lru_cache(maxsize=None)
def _emoji_size(index: int) -> Size:
    with Image.open(EMOJIS[index]) as emoji:
        return emoji.size


@register
class Collage(ContextOp):
    name = "collage"
    label = "Collage tile"
    params = (
        choice_param("grid", (1, 2, 3, 4), 2, help="tiles per side; chains draw 2 or 3, sweeps start at 1"),
        int_param("tile", 0, 15, 0, help="which tile is the original, row by row; wraps around the grid"),
        seed_param(), *recorded_params(),
    )
    sweep = Sweep("grid", (1, 2, 3, 4), lambda v, size, rng: sweep_params(Collage, size, rng, {"grid": int(v)}))

    def make_params(self, rng, size, context=NO_CONTEXT):
        # The grid first: a 4x4 collage is for sweeps, chains draw 2x2 or 3x3.
        grid = OneOf((2, 3)).sample(rng)
        params = {"grid": grid, "tile": int(rng.integers(grid * grid)), "seed": IntUniform(0, 9999).sample(rng)}
        params["donor"] = draw_donors(rng, context, self.donor_count(params))
        return self.with_box(params, size)

    def donor_count(self, params):
        return int(params["grid"]) ** 2 - 1

    def tiles(self, size: Size, grid: int) -> list[tuple[int, int, int, int]]:
        gap = max(1, min(size) // 100)
        xs = [round(i * size[0] / grid) for i in range(grid + 1)]
        ys = [round(i * size[1] / grid) for i in range(grid + 1)]
        return [(xs[c] + gap, ys[r] + gap, max(xs[c] + gap + 1, xs[c + 1] - gap),
                 max(ys[r] + gap + 1, ys[r + 1] - gap)) for r in range(grid) for c in range(grid)]

    def box(self, size, params):
        grid = int(params["grid"])
        return self.tiles(size, grid)[int(params["tile"]) % (grid * grid)]

    def compose(self, img, params, context):
        grid = int(params["grid"])
        donors = params["donor"].split(DONOR_SEPARATOR) if params["donor"] else []
        donors += [""] * (grid * grid - 1 - len(donors))
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        mine = int(params["tile"]) % (grid * grid)
        others = iter(donors)
        for index, (left, top, right, bottom) in enumerate(self.tiles(img.size, grid)):
            size = (right - left, bottom - top)
            if index == mine:
                tile = img.resize(size, Image.Resampling.BILINEAR)
            else:
                tile = backdrop(context, next(others), size, int(params["seed"]) + index)
            canvas.paste(tile, (left, top))
        return canvas


TEMPLATES = ("web.png", "mobile.png")


@functools.lru_cache(maxsize=None)
def _template(index: int) -> tuple[Size, tuple[int, int, int, int]]:
    """(template size, the photo's box in it), as AugLy's templates and bboxes.json give them."""
    template, box = augly_imutils.get_template_and_bbox(
        str(Path(augly_utils.SCREENSHOT_TEMPLATES_DIR) / TEMPLATES[index]), augly_utils.BBOXES_PATH)
    left, top, right, bottom = (int(v) for v in box)
    return template.size, (left, top, right, bottom)


@register
class Post(ContextOp):
    name = "post"
    label = "Social-post screenshot"
    params = (
        choice_param("template", (0, 1), 0, help="AugLy's screenshot template: 0 web, 1 mobile"),
        choice_param("crop", (0, 1), 0, help="1 crops the photo to fill the frame, 0 pads it"),
        seed_param(), *recorded_params(),
    )
    sweep = Sweep("frame", (0, 1, 2),
                  lambda v, size, rng: sweep_params(Post, size, rng, {"template": max(0, int(v) - 1)}))

    def donor_count(self, params):
        return 0

    def box(self, size, params):
        return _template(int(params["template"]))[1]

    def output_size(self, size, params):
        return _template(int(params["template"]))[0]

    def compose(self, img, params, context):
        template = str(Path(augly_utils.SCREENSHOT_TEMPLATES_DIR) / TEMPLATES[int(params["template"])])
        out = augly_image.overlay_onto_screenshot(img, template_filepath=template,
                                                  template_bboxes_filepath=augly_utils.BBOXES_PATH,
                                                  crop_src_to_fit=bool(params["crop"])).convert("RGB")
        left, top, right, _ = self.box(img.size, params)
        band = max(12, (right - left) // 12)
        draw = ImageDraw.Draw(out)
        draw.rectangle((left, top - band, right - 1, top - 1), fill=(255, 255, 255))
        write_centered(draw, (left, top - band, right, top), caption(int(params["seed"]), 5).lower(), (20, 20, 20))
        return out


def sweep_params(cls: type[ContextOp], size: Size, rng: np.random.Generator, strength: dict) -> dict:
    """A sweep level's parameters: the strength given, everything else drawn (no donors: patterns)."""
    op = cls()
    return op.with_box({**op.make_params(rng, size), **strength}, size)


# The composites, in registry order: after the extra edits.
COMPOSITE_OPS = ops_defined_in(__name__)

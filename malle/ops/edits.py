"""Edits that copy-detection benchmarks (DISC21, AugLy) use beyond the reference experiment's ten ops.

Flips and quarter turns, borders, text and shape overlays, grayscale, noise,
pixelation, perspective skew and a screenshot-like frame. Each is an ``Op`` like
the reference ten: ``make_params`` (derived from its ``ParamSpec``s) apart from a
deterministic ``apply``, so chains replay pixel for pixel. Everything is drawn
with Pillow and torchvision v2 and Pillow's built-in scalable font, so the output
is the same on every machine. (AugLy was not used: two of the functions needed,
``meme_format`` and ``perspective_transform``, fail with today's Pillow and numpy,
and its dependencies add a system library.)

The reproduction's chains keep to the reference ten (``REFERENCE_OPS``); these are
available in the lab and in severity sweeps.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from malle.ops.params import (
    IntUniform,
    Size,
    Sweep,
    Uniform,
    choice_param,
    float_param,
    int_param,
    placed,
    position_params,
    random_position,
)
from malle.ops.reference import text_origin, tv
from malle.ops.registry import Op, ops_defined_in, register

TEXT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789"


@register
class HorizontalFlip(Op):
    name = "hflip"
    label = "Horizontal flip"
    params = ()
    sweep = Sweep("flipped", (0, 1), lambda v, size, rng: {})

    def apply(self, img, params):
        return ImageOps.mirror(img)


@register
class QuarterTurn(Op):
    name = "rotatequarter"
    label = "Rotation by 90° steps"
    params = (choice_param("turns", (1, 2, 3), 1, help="quarter turns counter-clockwise"),)
    sweep = Sweep("turns", (0, 1, 2, 3), lambda v, size, rng: {"turns": int(v)})

    def apply(self, img, params):
        return img.rotate(90 * int(params["turns"]), expand=True)

    def output_size(self, size, params):
        return size if int(params["turns"]) == 2 else (size[1], size[0])


@register
class Pad(Op):
    name = "pad"
    label = "Border"
    params = (
        float_param("fraction", 0.0, 0.5, 0.1, help="border width as a fraction of the shorter side",
                    sample=Uniform(0.05, 0.25)),
        int_param("gray", 0, 255, 0, help="border colour, 0 black to 255 white"),
    )
    sweep = Sweep("border", (0, 0.05, 0.1, 0.2, 0.3, 0.5),
                  lambda v, size, rng: {"fraction": float(v), "gray": int(rng.integers(0, 256))})

    def border(self, size: Size, params: dict) -> int:
        return int(round(float(params["fraction"]) * min(size)))

    def apply(self, img, params):
        gray = int(params["gray"])
        return ImageOps.expand(img, border=self.border(img.size, params), fill=(gray, gray, gray))

    def output_size(self, size, params):
        border = self.border(size, params)
        return size[0] + 2 * border, size[1] + 2 * border


@register
class TextOverlay(Op):
    name = "text"
    label = "Text overlay"
    params = (
        int_param("text_seed", 0, 9999, 0, help="which random text (8 characters) is written"),
        int_param("font_size", 8, 160, 40, help="text size in pixels", sample=IntUniform(16, 64)),
        *position_params(),
    )
    sweep = Sweep("font_size", (0, 16, 32, 48, 64, 96, 128),
                  lambda v, size, rng: {"text_seed": int(rng.integers(0, 10000)), "font_size": int(v),
                                        **random_position(rng)})

    def apply(self, img, params):
        rng = np.random.default_rng(int(params["text_seed"]))
        text = "".join(rng.choice(list(TEXT_ALPHABET), 8))
        font = ImageFont.load_default(size=int(params["font_size"]))
        origin = text_origin(font, text, img.size, params["x"], params["y"])
        out = img.copy()
        # Black-outlined white text, readable on any photo, as overlays on shared images usually are.
        ImageDraw.Draw(out).text(origin, text, font=font, fill=(255, 255, 255),
                                 stroke_width=max(1, int(params["font_size"]) // 16), stroke_fill=(0, 0, 0))
        return out


@register
class ShapeOverlay(Op):
    name = "sticker"
    label = "Sticker (shape overlay)"
    params = (
        choice_param("shape", (0, 1, 2), 0, help="0 disc, 1 square, 2 triangle"),
        float_param("size", 0.0, 0.8, 0.25, help="side as a fraction of the shorter side", sample=Uniform(0.1, 0.35)),
        float_param("hue", 0.0, 1.0, 0.0, help="colour on the hue circle"),
        *position_params(),
    )
    sweep = Sweep("size", (0, 0.1, 0.2, 0.3, 0.4, 0.5),
                  lambda v, size, rng: {"shape": int(rng.integers(0, 3)), "size": float(v),
                                        "hue": round(float(rng.uniform()), 4), **random_position(rng)})

    def apply(self, img, params):
        side = int(round(float(params["size"]) * min(img.size)))
        if side < 1:
            return img.copy()
        left, top, right, bottom = placed(img.size, (side, side), params["x"], params["y"])
        colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(float(params["hue"]), 0.9, 0.95))
        out = img.copy()
        draw, box = ImageDraw.Draw(out), (left, top, right - 1, bottom - 1)
        shape = int(params["shape"])
        if shape == 0:
            draw.ellipse(box, fill=colour, outline=(0, 0, 0), width=max(1, side // 20))
        elif shape == 1:
            draw.rectangle(box, fill=colour, outline=(0, 0, 0), width=max(1, side // 20))
        else:
            draw.polygon([(left + side // 2, top), (left, top + side - 1), (left + side - 1, top + side - 1)],
                         fill=colour, outline=(0, 0, 0))
        return out


@register
class Grayscale(Op):
    name = "grayscale"
    label = "Grayscale"
    params = ()
    sweep = Sweep("gray", (0, 1), lambda v, size, rng: {})

    def apply(self, img, params):
        return img.convert("L").convert("RGB")


@register
class Noise(Op):
    name = "noise"
    label = "Gaussian noise"
    params = (
        float_param("sigma", 0.0, 100.0, 15.0, help="standard deviation in 8-bit levels", sample=Uniform(3.0, 30.0)),
        int_param("noise_seed", 0, 9999, 0, help="which noise pattern"),
    )
    sweep = Sweep("sigma", (0, 5, 10, 20, 35, 50, 75),
                  lambda v, size, rng: {"sigma": float(v), "noise_seed": int(rng.integers(0, 10000))})

    def apply(self, img, params):
        rng = np.random.default_rng(int(params["noise_seed"]))
        pixels = np.asarray(img, dtype=np.float32)
        noisy = pixels + rng.normal(0.0, float(params["sigma"]), pixels.shape).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")


@register
class Pixelate(Op):
    name = "pixelate"
    label = "Pixelation"
    params = (int_param("block", 1, 64, 8, help="side of each flat block in pixels", sample=IntUniform(3, 12)),)
    sweep = Sweep("block", (1, 2, 4, 8, 16, 32, 64), lambda v, size, rng: {"block": int(v)})

    def apply(self, img, params):
        block = max(1, int(params["block"]))
        small = img.resize((max(1, img.width // block), max(1, img.height // block)), Image.Resampling.BOX)
        return small.resize(img.size, Image.Resampling.NEAREST)


@register
class Perspective(Op):
    name = "perspective"
    label = "Perspective skew"
    params = (
        float_param("strength", 0.0, 0.45, 0.15, help="how far corners move inward, as a fraction of the side",
                    sample=Uniform(0.05, 0.25)),
        choice_param("tilt", (0, 1, 2, 3), 0, help="which edge recedes: 0 top, 1 right, 2 bottom, 3 left"),
    )
    sweep = Sweep("strength", (0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4),
                  lambda v, size, rng: {"strength": float(v), "tilt": int(rng.integers(0, 4))})

    def apply(self, img, params):
        w, h = img.size
        d = float(params["strength"])
        corners = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]  # top-left, top-right, bottom-right, bottom-left
        moved = [list(c) for c in corners]
        edge = int(params["tilt"])
        pairs = {0: ((0, 1), (d * w, 0)), 1: ((1, 2), (0, d * h)), 2: ((2, 3), (d * w, 0)), 3: ((3, 0), (0, d * h))}
        (a, b), (dx, dy) = pairs[edge]
        # The receding edge's two corners move towards each other.
        for index, sign in ((a, 1), (b, -1)):
            first, second = (sign, -sign) if edge in (0, 1) else (-sign, sign)
            moved[index][0] += first * dx if dx else 0
            moved[index][1] += second * dy if dy else 0
        return tv().perspective(img, corners, [[int(round(x)), int(round(y))] for x, y in moved],
                             interpolation=tv().InterpolationMode.BILINEAR, fill=0)


@register
class ScreenshotFrame(Op):
    name = "screenshot"
    label = "Screenshot frame"
    params = (
        float_param("bar", 0.0, 0.4, 0.12, help="height of the app bar above the photo, as a fraction of its height",
                    sample=Uniform(0.06, 0.2)),
        float_param("margin", 0.0, 0.3, 0.05, help="side margins, as a fraction of the width",
                    sample=Uniform(0.0, 0.1)),
        choice_param("dark", (0, 1), 0, help="0 light interface, 1 dark"),
    )
    sweep = Sweep("bar", (0, 0.05, 0.1, 0.15, 0.2, 0.3),
                  lambda v, size, rng: {"bar": float(v), "margin": 0.05, "dark": int(rng.integers(0, 2))})

    def bar_and_margin(self, size: Size, params: dict) -> tuple[int, int]:
        """The app bar's height (above and below the photo) and the side margins, in pixels."""
        return int(round(float(params["bar"]) * size[1])), int(round(float(params["margin"]) * size[0]))

    def apply(self, img, params):
        w, h = img.size
        bar, margin = self.bar_and_margin(img.size, params)
        background, ink = ((32, 32, 36), (200, 200, 205)) if int(params["dark"]) else ((246, 246, 248), (90, 90, 96))
        canvas = Image.new("RGB", (w + 2 * margin, h + 2 * bar), background)
        canvas.paste(img, (margin, bar))
        draw = ImageDraw.Draw(canvas)
        if 6 <= bar and 4 * bar <= canvas.width:  # a status line and interface marks, where they fit
            font = ImageFont.load_default(size=max(6, bar // 3))
            draw.text((margin + bar // 4, bar // 3), "12:30", font=font, fill=ink)
            for i in range(3):
                x = canvas.width - margin - (i + 1) * bar // 2
                draw.ellipse((x, bar // 3, x + bar // 4, bar // 3 + bar // 4), fill=ink)
            draw.rectangle((margin + bar // 4, h + bar + bar // 3, canvas.width - margin - bar // 4,
                            h + bar + bar // 3 + max(2, bar // 5)), fill=ink)
        return canvas

    def output_size(self, size, params):
        bar, margin = self.bar_and_margin(size, params)
        return size[0] + 2 * margin, size[1] + 2 * bar


# The extra edits, in registry order: after the reference ten, so REFERENCE_OPS stays the registry's prefix.
EXTRA_OPS = ops_defined_in(__name__)

"""The reference experiment's ten ops: crops, resize, rotation, blur, colour, hue, watermark, JPEG, occlusion.

The reproduction's chains draw from these (``REFERENCE_OPS``) unless ``--ops`` says
otherwise. Each op's ``sweep`` is its severity grid: ``values[0]`` leaves the
original untouched, the last value is the strongest edit the sweep tries.
"""

from __future__ import annotations

import io
import math
from types import ModuleType

from PIL import Image, ImageDraw, ImageFont

from malle.io.images import MAX_ASPECT, encode_jpeg
from malle.ops.params import (
    Fixed,
    Size,
    Sweep,
    choice_param,
    float_param,
    int_param,
    offset,
    placed,
    position_params,
    random_position,
)
from malle.ops.registry import Op, ops_defined_in, register

WATERMARK_TEXT = "Malle Project"
# No op makes a side longer than this: 20 x the largest resize target, far below JPEG's 65,535.
MAX_OUTPUT_SIDE = MAX_ASPECT * 384
CROP_SIZES = (256, 384)
CROP_HELP = "side of the square crop; pads black if larger"
CROP_SIDES = (1.0, 0.9, 0.8, 0.65, 0.5, 0.4, 0.3)  # the sweep's crop side as a fraction of the shorter side
BLUR_KERNELS = (3, 5, 7)


def tv() -> ModuleType:
    """torchvision's v2 functional ops, imported where an op first runs: importing torchvision costs seconds
    (it imports PyTorch's compiler), and the processes that only list, describe or check ops (the dashboard's
    own) never run one. The pool's workers have it from their fork server (``malle.parallel.PRELOAD``)."""
    import torchvision.transforms.v2.functional as functional

    return functional


def side_of(fraction: float, size: Size) -> int:
    """A fraction of the shorter side, in whole pixels (at least one)."""
    return max(1, int(round(fraction * min(size))))


@register
class CenterCrop(Op):
    name = "centercrop"
    label = "Center crop"
    params = (choice_param("size", CROP_SIZES, 256, help=CROP_HELP),)
    sweep = Sweep("side", CROP_SIDES, lambda v, size, rng: {"size": side_of(v, size)})

    def apply(self, img, params):
        side = int(params["size"])
        return tv().center_crop(img, [side, side])  # pads with black where the image is smaller

    def output_size(self, size, params):
        return (int(params["size"]),) * 2


@register
class RandomCrop(Op):
    name = "randomcrop"
    label = "Random crop"
    params = (
        choice_param("size", CROP_SIZES, 256, help=CROP_HELP),
        *position_params(),
    )
    sweep = Sweep("side", CROP_SIDES, lambda v, size, rng: {"size": side_of(v, size), **random_position(rng)})

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
    return offset(fraction, dim + 2 * pad - side) - pad


@register
class Resize(Op):
    name = "resize"
    label = "Random resize"
    params = (int_param("size", 256, 384, 256, help="shorter side after resizing; aspect is kept"),)
    sweep = Sweep("scale", (1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1), lambda v, size, rng: {"size": side_of(v, size)})

    def apply(self, img, params):
        width, height = self.output_size(img.size, params)
        return tv().resize(img, [height, width], interpolation=tv().InterpolationMode.BILINEAR, antialias=True)

    def output_size(self, size, params):
        # torchvision Resize(int): the shorter side becomes `size`, the longer is truncated.
        # The longer side is also capped, so no input shape can make this op ask for a huge
        # image (inputs are at most 1:MAX_ASPECT, so the cap only guards images from elsewhere).
        short = int(params["size"])
        width, height = size
        if width <= height:
            return short, min(int(short * height / width), MAX_OUTPUT_SIDE)
        return min(int(short * width / height), MAX_OUTPUT_SIDE), short


@register
class Rotate(Op):
    name = "rotate"
    label = "Rotation"
    params = (float_param("angle", -15.0, 15.0, 0.0, help="degrees, counter-clockwise; corners fill black"),)
    sweep = Sweep("angle", (0, 5, 10, 15, 22.5, 30, 45), lambda v, size, rng: {"angle": float(v)})

    def apply(self, img, params):
        angle = float(params["angle"])
        return tv().rotate(img, angle, interpolation=tv().InterpolationMode.BILINEAR, expand=False, fill=0)


def blur_kernel_for(size: Size) -> int:
    """Bigger images get a bigger kernel so the blur is visible at any scale."""
    short = min(size)
    return 3 if short < 256 else 5 if short < 512 else 7


def sweep_blur_kernel(sigma: float, size: Size) -> int:
    """The sweep's kernel: three sigmas each way, odd, and no wider than the image allows (reflect padding)."""
    kernel = 2 * math.ceil(3 * sigma) + 1
    limit = min(size) - 1 if min(size) % 2 == 0 else min(size)
    return max(3, min(kernel, limit))


@register
class Blur(Op):
    name = "blur"
    label = "Gaussian blur"
    params = (
        choice_param("kernel", BLUR_KERNELS, 5, help="kernel side; sampled from the shorter side", derived=True),
        float_param("sigma", 0.1, 2.0, 1.0, help="standard deviation in pixels"),
    )
    sweep = Sweep("sigma", (0, 0.5, 1, 2, 4, 6, 8),
                  lambda v, size, rng: {"kernel": sweep_blur_kernel(v, size), "sigma": float(v)})

    def make_params(self, rng, size):
        return {"kernel": blur_kernel_for(size), **super().make_params(rng, size)}

    def apply(self, img, params):
        kernel, sigma = int(params["kernel"]), float(params["sigma"])
        return tv().gaussian_blur(img, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


@register
class Color(Op):
    name = "color"
    label = "Brightness & contrast"
    params = (
        float_param("brightness", 0.8, 1.2, 1.0, help="1 keeps the image unchanged"),
        float_param("contrast", 0.6, 1.4, 1.0, help="1 keeps the image unchanged"),
    )
    sweep = Sweep("factor", (1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1),
                  lambda v, size, rng: {"brightness": float(v), "contrast": float(v)})

    def apply(self, img, params):
        brighter = tv().adjust_brightness(img, float(params["brightness"]))
        return tv().adjust_contrast(brighter, float(params["contrast"]))


@register
class Hue(Op):
    name = "hue"
    label = "Hue & saturation"
    params = (
        float_param("hue", -0.5, 0.5, 0.0, help="shift of the hue circle; ±0.5 is the opposite hue"),
        float_param("saturation", 0.6, 1.4, 1.0, help="1 keeps the image unchanged"),
    )
    sweep = Sweep("shift", (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
                  lambda v, size, rng: {"hue": float(v), "saturation": 1.0})

    def apply(self, img, params):
        shifted = tv().adjust_hue(img, float(params["hue"]))
        return tv().adjust_saturation(shifted, float(params["saturation"]))


@register
class Watermark(Op):
    name = "watermark"
    label = "Watermark"
    params = (
        *position_params(),
        int_param("font_size", 10, 200, 80, help=f"size of the text {WATERMARK_TEXT!r}", sample=Fixed(80)),
        int_param("opacity", 0, 255, 120, help="alpha of the white text out of 255", sample=Fixed(120)),
    )
    sweep = Sweep("opacity", (0, 40, 80, 120, 160, 200, 255),
                  lambda v, size, rng: {**random_position(rng), "font_size": int(40 + 160 * v / 255),
                                        "opacity": int(v)})

    def apply(self, img, params):
        # Pillow's built-in scalable font: identical output on every machine.
        # Loaded per call (~0.1 ms) because FreeType faces are not safe to share across threads.
        font = ImageFont.load_default(size=int(params["font_size"]))
        overlay = Image.new("RGBA", img.size, (255, 255, 255, 0))
        fill = (255, 255, 255, int(params["opacity"]))
        origin = text_origin(font, WATERMARK_TEXT, img.size, params["x"], params["y"])
        ImageDraw.Draw(overlay).text(origin, WATERMARK_TEXT, font=font, fill=fill)
        return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def text_origin(font: ImageFont.FreeTypeFont, text: str, size: Size, x: float, y: float) -> tuple[int, int]:
    """Where to draw ``text`` so that its visible box lies at fractions ``x``, ``y`` of the free range."""
    left, top, right, bottom = font.getbbox(text)
    # A FreeType font's box is in whole pixels (its stub allows floats, for other fonts).
    left, top, right, bottom = int(left), int(top), int(right), int(bottom)
    box_left, box_top, _, _ = placed(size, (right - left, bottom - top), x, y)
    # Shifted by the bbox's offset: Pillow places the text's origin, not its visible top-left.
    return box_left - left, box_top - top


@register
class Jpeg(Op):
    name = "jpeg"
    label = "JPEG"
    params = (int_param("quality", 30, 80, 55, help="JPEG quality; lower means stronger artefacts"),)
    sweep = Sweep("quality", (100, 75, 50, 30, 20, 10, 5), lambda v, size, rng: {"quality": int(v)})

    def apply(self, img, params):
        data = encode_jpeg(img, int(params["quality"]))
        with Image.open(io.BytesIO(data)) as decoded:
            return decoded.convert("RGB")


@register
class Occlude(Op):
    name = "occlude"
    label = "Occlusion"
    params = (
        int_param("size", 1, 512, 80, help="side of the black square; clipped to the image", sample=Fixed(80)),
        *position_params(),
    )
    # The sweep's strength is the occluded share of the image's area.
    sweep = Sweep("area", (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5),
                  lambda v, size, rng: {"size": max(1, int(round(math.sqrt(v * size[0] * size[1])))),
                                        **random_position(rng)})

    def apply(self, img, params):
        side = int(params["size"])
        left, top, right, bottom = placed(img.size, (side, side), params["x"], params["y"])
        out = img.copy()
        ImageDraw.Draw(out).rectangle((left, top, right - 1, bottom - 1), fill=(0, 0, 0))
        return out


# The reference experiment's ten, in registry order; reproduction chains draw from these unless --ops says otherwise.
REFERENCE_OPS = tuple(op.name for op in ops_defined_in(__name__))

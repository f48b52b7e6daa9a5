"""Safe image loading: every image enters the engine through ``load_rgb``.

Bad files raise ``BadImage`` with a one-line reason, so callers can record a
skip and carry on instead of crashing the run.

Decoding is bounded by memory, not only by Pillow's pixel count: an image whose decoded pixels
(pixels x bands x bytes per band) pass ``MAX_DECODED_BYTES`` is refused before it is decoded, at most
one decode per core runs at once (``decode_slot``), 16- and 32-bit images are brought to 8 bits a strip
at a time (never a whole float64 copy), and a caller that needs no more than ``max_pixels`` (the bank
and the service) has larger images reduced as they load: JPEG by DCT scaling before decoding (Pillow's
``draft``, so the limit applies to the reduced size), others by an integer box reduction right after it.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from malle.errors import BadImage

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MIN_SIDE = 8  # smaller than this carries no usable content for any descriptor
# Longer side over shorter side. Beyond 1:20 a picture is a strip (a banner, a scan line)
# that no op or descriptor treats meaningfully, and resizing its short side to a few hundred
# pixels would ask for an enormous long side.
MAX_ASPECT = 20
# An 8-bit RGB image at Pillow's pixel limit: heavier pixels (RGBA, CMYK, 32-bit) must be fewer.
assert Image.MAX_IMAGE_PIXELS is not None, "Pillow's decompression-bomb limit is on (its default)"
MAX_DECODED_BYTES = 3 * Image.MAX_IMAGE_PIXELS
STRIP_BYTES = 4 * 2**20  # float64 converted at once from 16/32-bit to 8-bit (a few rows of a large image)
REDUCIBLE = {"L", "LA", "RGBA", "CMYK"}  # modes Image.reduce takes, reduced before their conversion to RGB
BYTES_PER_BAND = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}

__all__ = ["BadImage", "MAX_ASPECT", "MAX_DECODED_BYTES", "MIN_SIDE", "decode_slot", "decoded_bytes", "encode_jpeg",
           "has_image_suffix", "load_rgb", "to_rgb"]

_SLOTS = threading.BoundedSemaphore(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                        else os.cpu_count() or 1))
_HELD = threading.local()


@contextlib.contextmanager
def decode_slot() -> Iterator[None]:
    """One of the process's decode slots (as many as cores), held for the block; re-entrant in a thread, so a
    caller can hold one across a decode and the work on the decoded image (the service: decode, encode,
    thumbnail) and the full-size pixels of at most one image per core exist at once."""
    depth = getattr(_HELD, "depth", 0)
    if depth == 0:
        _SLOTS.acquire()
    _HELD.depth = depth + 1
    try:
        yield
    finally:
        _HELD.depth = depth
        if depth == 0:
            _SLOTS.release()


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """What decoding costs: pixels x bands x bytes per band."""
    return size[0] * size[1] * Image.getmodebands(mode) * BYTES_PER_BAND.get(mode, 1)


def has_image_suffix(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def load_rgb(source: Path | str | bytes, max_pixels: int | None = None, max_bytes: int | None = None) -> Image.Image:
    """Decode a file (or bytes) to an 8-bit RGB image, upright per its EXIF tag.

    Handles CMYK, grayscale, palette, RGBA (composited on white) and 16-bit
    images. Raises ``BadImage`` for anything that is not a usable image. With
    ``max_pixels``, a larger image is reduced on load to at most about that many;
    ``max_bytes`` lowers the decoded-bytes limit (default ``MAX_DECODED_BYTES``).
    """
    try:
        if not isinstance(source, bytes) and Path(source).stat().st_size == 0:
            raise BadImage("empty file (0 bytes)")
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        with warnings.catch_warnings(), decode_slot():
            # Pillow warns between the limit and twice the limit; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                check_shape(img.size)  # before decoding: a strip can be huge yet pass the bomb limit
                if max_pixels is not None and img.width * img.height > max_pixels and img.format == "JPEG":
                    img.draft(img.mode, _target(img.size, max_pixels))  # DCT scaling: never decoded at full size
                check_cost(img.size, img.mode, max_bytes)
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # not a copy: to_rgb makes the one needed
                rgb = to_rgb(img, max_pixels)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage(f"larger than Pillow's decompression-bomb limit ({err})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can identify") from None
    except FileNotFoundError:
        raise BadImage("file not found") from None
    except PermissionError:
        raise BadImage("not readable (permission denied)") from None
    except (OSError, SyntaxError, ValueError) as err:
        # Truncated and corrupt files surface as OSError / SyntaxError in Pillow.
        raise BadImage(f"corrupt or truncated image ({err})") from None
    check_shape(rgb.size)  # EXIF rotation swaps the sides, nothing more
    return rgb


def check_shape(size: tuple[int, int]) -> None:
    """Raise ``BadImage`` for an image too small or too elongated to use."""
    short, long = sorted(size)
    if short < MIN_SIDE:
        raise BadImage(f"too small ({size[0]}x{size[1]}, need at least {MIN_SIDE} px a side)")
    if long > MAX_ASPECT * short:
        raise BadImage(f"extreme aspect ratio ({size[0]}x{size[1]}, more than 1:{MAX_ASPECT})")


def check_cost(size: tuple[int, int], mode: str, limit: int | None = None) -> None:
    """Raise ``BadImage`` for an image whose decoded pixels would take more than ``limit`` bytes."""
    limit = MAX_DECODED_BYTES if limit is None else limit
    cost = decoded_bytes(size, mode)
    if cost > limit:
        raise BadImage(f"decodes to {cost / 2**20:.0f} MiB ({size[0]}x{size[1]} {mode}), over the limit of "
                       f"{limit / 2**20:.0f} MiB")


def _target(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    scale = math.sqrt(max_pixels / (size[0] * size[1]))
    return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))


def _reduced(img: Image.Image, max_pixels: int | None) -> Image.Image:
    """``img`` reduced by the smallest integer factor that brings it to ``max_pixels`` (box filter)."""
    if max_pixels is None or img.width * img.height <= max_pixels:
        return img
    factor = math.ceil(math.sqrt(img.width * img.height / max_pixels))
    return img.reduce(factor)


def _band_extrema(img: Image.Image) -> tuple[float, float]:
    """(lowest, highest) value of a one-band image (getextrema gives a pair per band for the others)."""
    lo, hi = img.getextrema()
    assert isinstance(lo, int | float) and isinstance(hi, int | float), f"{img.mode} has more than one band"
    return lo, hi


def to_rgb(img: Image.Image, max_pixels: int | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (reduced to about ``max_pixels`` when given)."""
    if img.mode == "RGB":
        small = _reduced(img, max_pixels)
        return img.copy() if small is img else small
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping at 255.
        top = 65535.0 if img.mode.startswith("I;16") else max(float(_band_extrema(img)[1]), 1.0)
        eight = _strips(img, lambda arr: np.clip(arr / top * 255.0, 0, 255))
        return _reduced(eight, max_pixels).convert("RGB")
    if img.mode == "F":
        lo, hi = (float(v) for v in _band_extrema(img))
        eight = _strips(img, lambda arr: (arr - lo) / (hi - lo or 1.0) * 255.0)
        return _reduced(eight, max_pixels).convert("RGB")
    img = _reduced(img, max_pixels) if img.mode in REDUCIBLE else img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img, mask=img.getchannel("A"))
        return _reduced(canvas, max_pixels)
    return _reduced(img.convert("RGB"), max_pixels)


def _strips(img: Image.Image, to_eight) -> Image.Image:
    """A 16/32-bit image as 8-bit L, ``to_eight`` (float64 in, 0..255 out) applied a strip of rows at a time, so
    no float64 copy of the whole image is made (a 9,400 x 9,400 16-bit PNG took 2.35 GB that way)."""
    out = np.empty((img.height, img.width), dtype=np.uint8)
    rows = max(1, STRIP_BYTES // (8 * img.width))
    for top in range(0, img.height, rows):
        strip = img.crop((0, top, img.width, min(img.height, top + rows)))
        out[top:top + strip.height] = to_eight(np.asarray(strip, dtype=np.float64)).astype(np.uint8)
    return Image.fromarray(out, "L")


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    """Encode deterministically (no EXIF, fixed subsampling) so equal pixels give equal bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buf.getvalue()

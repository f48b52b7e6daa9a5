"""Safe image loading: every image enters the engine through ``load_rgb``.

Bad files raise ``BadImage`` with a one-line reason, so callers can record a
skip and carry on instead of crashing the run.
"""

from __future__ import annotations

import io
import warnings
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

__all__ = ["BadImage", "MAX_ASPECT", "MIN_SIDE", "encode_jpeg", "has_image_suffix", "load_rgb", "to_rgb"]


def has_image_suffix(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def load_rgb(source: Path | str | bytes) -> Image.Image:
    """Decode a file (or bytes) to an 8-bit RGB image, upright per its EXIF tag.

    Handles CMYK, grayscale, palette, RGBA (composited on white) and 16-bit
    images. Raises ``BadImage`` for anything that is not a usable image.
    """
    try:
        if not isinstance(source, bytes) and Path(source).stat().st_size == 0:
            raise BadImage("empty file (0 bytes)")
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        with warnings.catch_warnings():
            # Pillow warns between the limit and twice the limit; treat both as bombs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                check_shape(img.size)  # before decoding: a strip can be huge yet pass the bomb limit
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = to_rgb(img)
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


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB")


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    """Encode deterministically (no EXIF, fixed subsampling) so equal pixels give equal bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buf.getvalue()

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

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MIN_SIDE = 8  # smaller than this carries no usable content for any descriptor


class BadImage(ValueError):
    """A file that cannot be used as an image; ``str(err)`` is the reason."""


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
    except (OSError, SyntaxError, ValueError) as err:
        # Truncated and corrupt files surface as OSError / SyntaxError in Pillow.
        raise BadImage(f"corrupt or truncated image ({err})") from None
    if min(rgb.size) < MIN_SIDE:
        raise BadImage(f"too small ({rgb.width}x{rgb.height}, need at least {MIN_SIDE} px a side)")
    return rgb


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

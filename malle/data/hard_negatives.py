"""Hard negatives: distractor queries derived from no reference, modelled on DISC21's query set.

DISC21's queries hold images that look like many references at once: near-uniform frames, text, screenshots,
patterns, thumbnails, blurs, collages. A method that matches one of them has made a false match, and they are
where score normalisation earns its keep. Each kind below is one small class (``NegativeKind``); ``KINDS`` is their
fixed order. Negative ``i`` of a run is ``KINDS[i % len(KINDS)]`` (so the kinds share the count evenly, the
first ones taking one more when it does not divide), made by its own generator, seeded by the run seed, the
``SeedStream.HARD_NEGATIVES`` stream and ``i``: nothing else moves it, and workers make the bytes one process
would (``make_hard_negatives``).

The kinds that need pictures (tiny, blurred, montage) take them from the spare photos that distractor queries
are made from (``SparePools.distractor_sources``): no reference and no database image is ever in a negative.
Their manifest rows name those photos in ``origin`` (joined by ``|``); the generated kinds leave it empty. They
draw with the negative's own generator, so a photo may also be a copy's origin: the copies' order never depends on
how many negatives there are. The background set of ``METHOD+norm`` leaves out every photo named in ``origin``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import augly.image.functional as augly_image
import augly.utils as augly_utils
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from malle import parallel
from malle.data.distractor_queries import ORIGIN_SEPARATOR
from malle.data.pools import SeedStream
from malle.data.sampling import Candidate
from malle.errors import BadImage
from malle.io.cache import write_bytes
from malle.io.images import encode_jpeg, load_rgb
from malle.ops import COPY_JPEG_QUALITY, get_op

VERSION = 1  # bump when a kind draws or paints differently: the distractors stage's key holds it
WORDS = ("the", "and", "for", "you", "new", "sale", "today", "free", "click", "here", "more", "login", "password",
         "account", "price", "order", "shipping", "news", "video", "photo", "share", "like", "follow", "comment",
         "reply", "menu", "home", "search", "settings", "help", "terms", "privacy", "update", "download", "open",
         "file", "page", "next", "back", "contact", "about", "story", "weather", "sports", "market", "report",
         "2021", "12:45", "100%", "$19.99", "#tbt", "@friend", "OK", "Cancel", "Submit", "Subscribe")


class Photos:
    """The spare photos a kind may take, drawn with the negative's own generator; remembers what it took."""

    def __init__(self, pool: Sequence[Candidate], rng: np.random.Generator):
        self.pool, self.rng = pool, rng
        self.taken: list[str] = []

    def take(self) -> Image.Image:
        candidate = self.pool[int(self.rng.integers(len(self.pool)))]
        self.taken.append(candidate.rel)
        return load_rgb(candidate.path)  # BadImage: the negative is passed over, with the reason


class NegativeKind(ABC):
    """One family of hard negatives: ``make`` paints one from its generator (and spare photos when it needs)."""

    name: ClassVar[str]  # the manifest's ``kind`` and the file name's prefix: lowercase letters
    needs_photos: ClassVar[bool] = False

    @abstractmethod
    def make(self, rng: np.random.Generator, photos: Photos) -> Image.Image: ...


def _size(rng: np.random.Generator, low: int = 224, high: int = 640) -> tuple[int, int]:
    return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float64)


def _image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


class NearUniform(NegativeKind):
    """One colour, a third of them exactly solid (black, white, grey or any), the rest with faint noise."""

    name = "uniform"

    def make(self, rng, photos):
        width, height = _size(rng)
        solid = rng.random() < 1 / 3
        palette = np.array([[0, 0, 0], [255, 255, 255], [128, 128, 128]], np.float64)
        colour = palette[int(rng.integers(3))] if solid and rng.random() < 0.5 else _colour(rng)
        noise = 0.0 if solid else float(rng.uniform(1, 8))
        return _image(colour + rng.normal(0, 1, (height, width, 3)) * noise)


class Gradient(NegativeKind):
    """Two colours blended along a line at any angle, or from a centre outwards."""

    name = "gradient"

    def make(self, rng, photos):
        width, height = _size(rng)
        ys, xs = np.mgrid[0:height, 0:width] / max(width, height)
        if rng.random() < 0.5:
            angle = rng.uniform(0, 2 * np.pi)
            t = xs * np.cos(angle) + ys * np.sin(angle)
        else:
            cx, cy = rng.uniform(0, width / max(width, height)), rng.uniform(0, height / max(width, height))
            t = np.hypot(xs - cx, ys - cy)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
        return _image(_colour(rng) * (1 - t[..., None]) + _colour(rng) * t[..., None])


def text_page(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Lines of words in Pillow's built-in font on a plain light or dark page."""
    dark = rng.random() < 0.3
    paper, ink = ((0, 50), (200, 256)) if dark else ((215, 256), (0, 80))
    page = Image.new("RGB", size, tuple(int(v) for v in rng.integers(*paper, 3)))
    ink_colour = tuple(int(v) for v in rng.integers(*ink, 3))
    size_px = int(rng.integers(12, 40))
    font = ImageFont.load_default(size=size_px)
    draw = ImageDraw.Draw(page)
    line = int(size_px * 1.3)
    margin = int(rng.integers(4, 24))
    for top in range(margin, size[1] - line // 2, line):
        words = " ".join(rng.choice(WORDS, int(rng.integers(2, 12))))
        draw.text((margin, top), words, font=font, fill=ink_colour)
    return page


class Text(NegativeKind):
    """A page of rendered text and nothing else."""

    name = "text"

    def make(self, rng, photos):
        return text_page(rng, _size(rng))


SCREENSHOT_TEMPLATES = ("web.png", "mobile.png")


class Screenshot(NegativeKind):
    """A page of text in one of AugLy's screenshot templates (a web page or a phone's feed)."""

    name = "screenshot"

    def make(self, rng, photos):
        template = Path(augly_utils.SCREENSHOT_TEMPLATES_DIR) / SCREENSHOT_TEMPLATES[int(rng.integers(2))]
        page = text_page(rng, _size(rng, 320, 800))
        return augly_image.overlay_onto_screenshot(page, template_filepath=str(template),
                                                   template_bboxes_filepath=augly_utils.BBOXES_PATH,
                                                   crop_src_to_fit=True).convert("RGB")


class Pattern(NegativeKind):
    """A repeating geometric pattern of two colours: stripes at an angle, a checkerboard, dots or a grid."""

    name = "pattern"

    def make(self, rng, photos):
        width, height = _size(rng)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        period = float(rng.uniform(6, 64))
        angle = rng.uniform(0, np.pi)
        u, v = xs * np.cos(angle) + ys * np.sin(angle), -xs * np.sin(angle) + ys * np.cos(angle)
        cu, cv = (u / period) % 1, (v / period) % 1
        shapes = (cu < 0.5,  # stripes
                  (cu < 0.5) ^ (cv < 0.5),  # checkerboard
                  np.hypot(cu - 0.5, cv - 0.5) < rng.uniform(0.15, 0.45),  # dots
                  (cu < 0.12) | (cv < 0.12))  # grid lines
        mask = shapes[int(rng.integers(len(shapes)))][..., None]
        return _image(np.where(mask, _colour(rng), _colour(rng)))


class Texture(NegativeKind):
    """Fractal noise (octaves of smoothly enlarged random grids) between two colours: sand, cloud, stone."""

    name = "texture"

    def make(self, rng, photos):
        width, height = _size(rng)
        field = np.zeros((height, width))
        cells, weight = int(rng.integers(2, 8)), 1.0
        for _ in range(int(rng.integers(3, 7))):
            grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8), "L")
            field += weight * np.asarray(grid.resize((width, height), Image.Resampling.BICUBIC), np.float64)
            cells, weight = cells * 2, weight * float(rng.uniform(0.4, 0.7))
        t = ((field - field.min()) / max(float(np.ptp(field)), 1e-9))[..., None]
        return _image(_colour(rng) * (1 - t) + _colour(rng) * t)


class Tiny(NegativeKind):
    """A spare photo shrunk to a thumbnail of 16 to 64 pixels on its long side."""

    name = "tiny"
    needs_photos = True

    def make(self, rng, photos):
        img = photos.take()
        side = int(rng.integers(16, 65))
        scale = side / max(img.size)
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                          Image.Resampling.BILINEAR)


class Blurred(NegativeKind):
    """A spare photo blurred so hard (a radius of 4 to 10 % of its long side) that only its colours remain."""

    name = "blurred"
    needs_photos = True

    def make(self, rng, photos):
        img = photos.take()
        img = img.resize((max(1, img.width * 512 // max(img.size)), max(1, img.height * 512 // max(img.size))),
                         Image.Resampling.BILINEAR)
        return img.filter(ImageFilter.GaussianBlur(max(img.size) * float(rng.uniform(0.04, 0.10))))


class Montage(NegativeKind):
    """A 2x2 or 3x3 collage made only of spare photos (the ``collage`` op's tiles, with no original in it)."""

    name = "montage"
    needs_photos = True

    def make(self, rng, photos):
        grid, size = int(rng.choice((2, 3))), _size(rng, 384, 640)
        canvas = Image.new("RGB", size, (255, 255, 255))
        for left, top, right, bottom in get_op("collage").tiles(size, grid):
            canvas.paste(ImageOps.fit(photos.take(), (right - left, bottom - top), Image.Resampling.BILINEAR),
                         (left, top))
        return canvas


KINDS: tuple[NegativeKind, ...] = (NearUniform(), Gradient(), Text(), Screenshot(), Pattern(), Texture(), Tiny(),
                                   Blurred(), Montage())


def kind_of(index: int) -> NegativeKind:
    """The kind of a run's negative ``index``: the kinds in turn."""
    return KINDS[index % len(KINDS)]


@dataclass(frozen=True)
class _NegativeJob:
    index: int
    seed: int
    pool: tuple[Candidate, ...]
    out_dir: Path


def _negative_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(SeedStream.HARD_NEGATIVES), index])


def negative_name(kind: NegativeKind, index: int) -> str:
    """``{kind}-{index}.JPEG``: no ``_``, so never a copy's name (``{class}_{instance}_{ops}``)."""
    return f"{kind.name}-{index:05d}.JPEG"


def _make_one(job: _NegativeJob) -> dict | tuple[str, str]:
    """The negative's manifest row, its JPEG written (a worker's part); (photo, reason) when a photo is unusable."""
    kind = kind_of(job.index)
    photos = Photos(job.pool, _negative_rng(job.seed, job.index))
    try:
        img = kind.make(photos.rng, photos)
    except BadImage as err:
        return photos.taken[-1], str(err)
    name = negative_name(kind, job.index)
    write_bytes(job.out_dir / name, encode_jpeg(img, COPY_JPEG_QUALITY))
    return {"file": name, "source": "", "class": "", "copy_index": 0, "chain_length": 0, "ops": "", "chain": "[]",
            "chain_lengths": "", "origin": ORIGIN_SEPARATOR.join(photos.taken), "kind": kind.name}


def make_hard_negatives(count: int, pool: Sequence[Candidate], out_dir: Path, seed: int,
                        progress: Callable | None = None) -> tuple[list[dict], list[dict]]:
    """``count`` hard negatives written into ``out_dir``: (their manifest rows, photos passed over with reasons).

    ``pool``: the spare photos the picture kinds take from; without any, those kinds are left out (the
    generated ones stand alone). A negative whose photo cannot be read is passed over, so the count is
    then one fewer; the kinds never depend on each other, so the rest stay as they are."""
    out_dir.mkdir(parents=True, exist_ok=True)
    indexes = [i for i in range(count) if pool or not kind_of(i).needs_photos]
    jobs = [_NegativeJob(i, seed, tuple(pool), out_dir) for i in indexes]
    rows, skipped = [], []
    bar = progress(total=len(jobs), desc="hard negatives") if progress and jobs else None
    for made in parallel.ordered_map(_make_one, jobs):
        if isinstance(made, dict):
            rows.append(made)
        else:
            skipped.append({"path": made[0], "reason": made[1]})
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return rows, skipped


def kind_counts(manifest: pd.DataFrame) -> dict[str, int]:
    """How many negatives of each kind a distractor manifest holds, in ``KINDS`` order."""
    counts = manifest["kind"].value_counts()
    return {kind.name: int(counts.get(kind.name, 0)) for kind in KINDS}

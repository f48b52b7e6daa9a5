"""What several pages share: labels, thumbnails, neighbour cards, pagination."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from malle.evaluation import recall as evaluate
from malle.io.images import encode_jpeg, load_rgb
from malle.io.tables import row_ids
from malle.lab.experiment import Experiment
from malle.lab.results import Results
from malle.ops import OPS
from malle.tricks import methods as trick_names

LEVELS = tuple(evaluate.LEVELS)  # ("instance", "class")
THUMB_PX = 160


@dataclass
class Thumb:
    path: Path
    caption: str
    is_true: bool = False


def op_title(op: str) -> str:
    return f"{op} ({OPS[op].label})" if op in OPS else op


def with_labels(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    return table.assign(label=table["method"].map(labels).fillna(table["method"]))


def level_slice(table: pd.DataFrame, k: int, level: str) -> pd.DataFrame:
    return table[(table["k"] == k) & (table["level"] == level)]


def recall_table(results: Results, ks: Sequence[int]) -> pd.DataFrame:
    return results.recall(list(ks))


def score_text(exp: Experiment, method: str, score: float) -> str:
    """A score in its method's unit: cosine similarity, or Hamming distance out of the code's bits."""
    desc = exp.descriptor(method)
    return f"{desc.score_name} {desc.metric.format_score(score, desc.dim)}"


# -- images -------------------------------------------------------------------------------------
def thumbnail_jpeg(path: str | Path, px: int = THUMB_PX) -> bytes:
    """A small JPEG of an image file (for galleries; the full image is never sent)."""
    return image_thumbnail(load_rgb(Path(path)), px)


def preview_jpeg(data: bytes, px: int = 320) -> bytes:
    """A display-sized JPEG of an image file's bytes."""
    return image_thumbnail(load_rgb(data), px)


def image_thumbnail(img: Image.Image, px: int = THUMB_PX) -> bytes:
    small = img.copy()
    small.thumbnail((px, px), Image.Resampling.LANCZOS)
    return encode_jpeg(small, 85)


def neighbour_thumbs(exp: Experiment, method: str, ids: np.ndarray, scores: np.ndarray,
                     source: str | None) -> list[Thumb]:
    """Thumbnails of database items by id. Ids follow ``exp.database(method)``: the originals, then the extra
    references (--db-distractors, --db-extra). A reference known only by its embedding has no image here and is
    left out; the others keep their ranks."""
    files = exp.database(method)["file"].to_numpy()
    thumbs = []
    for rank, (i, score) in enumerate(zip(ids, scores), start=1):
        path = exp.database_image(method, int(i)) if i >= 0 else None  # FAISS pads a short result with -1
        if path is None:
            continue
        file = files[i]
        mark = "true original · " if file == source else ""  # the grid marks it with an icon
        thumbs.append(Thumb(path, f"{mark}#{rank} {file} · {score_text(exp, method, score)}", file == source))
    return thumbs


def original_labels(originals: pd.DataFrame) -> dict[str, str]:
    return {file: f"{file} (class {label})" for file, label in zip(originals["file"], originals["class"])}


# -- pagination ---------------------------------------------------------------------------------
def n_pages(n_items: int, per_page: int) -> int:
    return max(1, -(-n_items // per_page))


def page_rows(table: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Rows of 1-based ``page``."""
    start = (page - 1) * per_page
    return table.iloc[start:start + per_page]


# -- rankings of one image (lab and search) ----------------------------------------------------
@dataclass
class Ranking:
    method: str
    rank: int | None  # of the true original, 1-based; None when not asked or not found
    table: pd.DataFrame  # rank, file, class, score, is_true (top rows)


def rank_image(exp: Experiment, method: str, img: Image.Image, source: str | None, top: int) -> Ranking:
    """Search one image against every original; where ``source`` ranks and the first ``top`` hits."""
    found = exp.query(method, [img], k=len(exp.originals))
    files = exp.originals["file"].to_numpy()[found.ids[0]]
    table = pd.DataFrame({"rank": np.arange(1, len(files) + 1), "file": files,
                          "class": exp.originals["class"].to_numpy()[found.ids[0]],
                          "score": found.scores[0].astype(float), "is_true": files == source})
    position = np.flatnonzero(table["is_true"].to_numpy())
    rank = int(position[0]) + 1 if len(position) else None
    return Ranking(method, rank, table.head(top))


def rank_everywhere(results: Results, img: Image.Image, source: str | None, top: int) -> list[Ranking]:
    """Every base method's ranking: a matching trick applies to a run's queries, not to one new image."""
    return [rank_image(results.experiment, m, img, source, top) for m in results.methods
            if not trick_names.parse(m).is_derived]


def ranking_thumbs(exp: Experiment, ranking: Ranking) -> list[Thumb]:
    table = ranking.table
    true = table.loc[table["is_true"], "file"]
    return neighbour_thumbs(exp, ranking.method, row_ids(exp.originals["file"], table["file"]),
                            table["score"].to_numpy(), true.iloc[0] if len(true) else None)

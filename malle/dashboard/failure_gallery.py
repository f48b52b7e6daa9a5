"""Failure gallery page: queries whose true original is not the top-1 hit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from malle.dashboard.shared import Thumb, neighbour_thumbs
from malle.evaluation import recall as evaluate
from malle.io.images import load_rgb
from malle.io.tables import row_ids
from malle.lab.experiment import Experiment, Results
from malle.ops import OPS, ContextOp, Step, chain_from_json, describe_chain
from malle.report.palette import short_name


def failures(results: Results, method: str, include_ops: Sequence[str] = ()) -> pd.DataFrame:
    """Queries whose true original is not top-1 for ``method``, worst rank first.

    A rank beyond the search depth (NA) counts as the worst.
    """
    per_query = results.per_query
    part = evaluate.filter_by_ops(per_query[per_query["method"] == method], include_ops)
    failed = part[~evaluate.hit_at_k(part, 1).to_numpy()]
    return failed.sort_values(["rank", "query"], ascending=[False, True], na_position="first").reset_index(drop=True)


@dataclass
class FailureCard:
    query: str
    query_path: Path
    source_path: Path
    rank: int | None
    chain: str
    charged: str | None = None  # the op(s) whose removal restores the hit, or "the combination"
    neighbours: list[Thumb] = field(default_factory=list)
    box: tuple[int, int, int, int] | None = None  # the composite's pasted region in the query, when known


# Edits after a composite that leave every pixel where it was, so its recorded box still marks the region.
IN_PLACE_OPS = frozenset({"blur", "color", "hue", "watermark", "jpeg", "occlude", "text", "sticker", "grayscale",
                          "noise", "pixelate", "overlay", "emoji"})


def composite_box(chain: Sequence[Step]) -> tuple[int, int, int, int] | None:
    """The box the chain's last composite recorded (the original's region, or what covers it), if every later
    edit left pixels in place; None for chains without a composite or whose later edits moved the region."""
    for index in range(len(chain) - 1, -1, -1):
        if isinstance(OPS[chain[index].op], ContextOp):
            later = chain[index + 1:]
            if all(step.op in IN_PLACE_OPS for step in later):
                params = chain[index].params
                left, top, right, bottom = (int(params[side]) for side in ("left", "top", "right", "bottom"))
                return left, top, right, bottom
            return None
    return None


def boxed(path: Path, box: tuple[int, int, int, int]) -> Image.Image:
    """The query with the pasted region outlined in red."""
    img = load_rgb(path)
    width = max(2, min(img.size) // 100)
    ImageDraw.Draw(img).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=(255, 0, 0), width=width)
    return img


def failure_cards(exp: Experiment, method: str, rows: pd.DataFrame, neighbour_ids: np.ndarray,
                  neighbour_scores: np.ndarray, top: int = 3, charged: dict[str, str] | None = None
                  ) -> list[FailureCard]:
    """Everything the gallery shows for each failed query: images, chain and retrieved top-``top``."""
    positions = row_ids(exp.manifest["file"], rows["query"])
    chains = exp.manifest["chain"].to_numpy()
    cards = []
    for row, pos in zip(rows.itertuples(), positions):
        rank = None if pd.isna(row.rank) else int(row.rank)
        chain = chain_from_json(chains[pos])
        cards.append(FailureCard(
            query=row.query, query_path=exp.copies_dir / row.query, source_path=exp.originals_dir / row.source,
            rank=rank, chain=describe_chain(chain), charged=(charged or {}).get(row.query),
            neighbours=neighbour_thumbs(exp, method, neighbour_ids[pos, :top], neighbour_scores[pos, :top],
                                        row.source), box=composite_box(chain)))
    return cards


def charged_by_query(results: Results, method: str) -> dict[str, str]:
    """{missed query: the op(s) charged with the miss, or "the combination"} for chains of two or more ops."""
    table = results.charged(method)
    return dict(zip(table["query"], table["charged"].str.replace("|", " and ", regex=False)))


def failure_count(results: Results, method: str) -> int:
    part = results.per_query[results.per_query["method"] == method]
    return int((~evaluate.hit_at_k(part, 1).to_numpy()).sum())


def default_method(results: Results) -> str:
    """The gallery's first method: the first (in the sidebar's order, best families first) that fails at all, so the
    page opens on failures; the first method when none fails (the page then points to where failures are)."""
    return next((m for m in results.methods if failure_count(results, m)), results.methods[0])


def alternative_text(preset: str, method: str, failures: int, queries: int, current_preset: str) -> str:
    """A button's words for one (preset, method) with failures."""
    where = "" if preset == current_preset else f" on the {preset} preset"
    return f"{short_name(method)}{where}: {failures} failures among {queries}"

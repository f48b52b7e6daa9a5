"""Robustness page: Recall@1 against the strength of each op alone, and where each method breaks."""

from __future__ import annotations

import altair as alt
import pandas as pd

from malle.dashboard.shared import image_thumbnail, with_labels
from malle.errors import BadImage
from malle.io.images import load_rgb
from malle.lab.experiment import Experiment
from malle.ops import OPS
from malle.ops.severity import GRIDS, breaking_points, placement_rng

# One crop, one geometry, one codec, one flip: a quick first sweep.
DEFAULT_OPS = ("randomcrop", "rotate", "jpeg", "hflip")


def curves_chart(table: pd.DataFrame, labels: dict[str, str]) -> alt.Chart:
    """One panel per op, one line per method: Recall@1 against the level, the level's parameter in the tooltip."""
    data = with_labels(table, labels)
    return alt.Chart(data).mark_line(point=True).encode(
        x=alt.X("level:O", title="level (strength grows to the right)"),
        y=alt.Y("recall_at_1:Q", title="Recall@1", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("label:N", title="method"),
        tooltip=["label:N", "op:N", "param:N", alt.Tooltip("recall_at_1:Q", format=".3f"),
                 alt.Tooltip("recall_at_10:Q", format=".3f"), "n:Q"],
    ).properties(width=230, height=170).facet(facet=alt.Facet("op:N", title=None), columns=3)


def breaking_table(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Method × op: the parameter at which Recall@1 first falls below 0.9 ("holds" when it never does)."""
    broken = breaking_points(table)
    broken = broken.assign(where=broken["param"].where(broken["param"] != "", "holds"),
                           method=broken["method"].map(labels))
    return broken.pivot(index="op", columns="method", values="where")


def strip(exp: Experiment, op: str, original: str, px: int = 150) -> list[tuple[str, bytes]]:
    """One original at every level of ``op``: (the level's parameter, a thumbnail), unusable levels left out."""
    grid, img = GRIDS[op], load_rgb(exp.originals_dir / original)
    frames = []
    for value in grid.values:
        try:
            frames.append((grid.describe(value),
                           image_thumbnail(grid.make(img, value, placement_rng(exp.config.seed, original, op)), px)))
        except BadImage:  # this level leaves no usable image
            continue
    return frames


def op_options() -> list[str]:
    return list(OPS)


def sweeps_cached(exp: Experiment, ops: list[str]) -> bool:
    """Whether every (method, op, level) of these sweeps is in the cache already."""
    return all(exp.is_cached("sweepscore", m, op, level) for m in exp.methods for op in ops
               for level in range(len(GRIDS[op].values)))

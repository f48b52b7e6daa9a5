"""Robustness page: Recall@1 against the strength of each op alone, and where each method breaks."""

from __future__ import annotations

import altair as alt
import pandas as pd

from malle.dashboard.shared import image_thumbnail
from malle.errors import BadImage
from malle.io.images import load_rgb
from malle.lab.experiment import Experiment
from malle.ops import OPS
from malle.ops.severity import GRIDS, MIN_RECALL, breaking_points, placement_rng
from malle.report.charts import severity_chart
from malle.report.palette import short_names, svg_rendered

# One crop, one geometry, one codec, one flip: a quick first sweep.
DEFAULT_OPS = ("randomcrop", "rotate", "jpeg", "hflip")


def curves_chart(table: pd.DataFrame, methods: list[str]) -> alt.ConcatChart:
    """The report's severity panels (``malle.report.charts.severity_chart``: each op in its own unit, a colour per
    method), sized for the page."""
    # Three panels of 190 px and the legend on top fit the page beside the sidebar at 1366 px.
    return svg_rendered(severity_chart(table, short_names(methods), MIN_RECALL, width=190, height=150, columns=3,
                                       legend=alt.Legend(orient="top", labelLimit=260)))


def breaking_table(table: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Op × method (short names): the strength at which Recall@1 first falls below 0.9 ("holds" when it never does)."""
    broken = breaking_points(table)
    names = short_names(methods)
    broken = broken.assign(where=broken["param"].where(broken["param"] != "", "holds"),
                           method=broken["method"].map(names))
    wide = broken.pivot(index="op", columns="method", values="where")
    return wide[[name for name in names.values() if name in wide.columns]]


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

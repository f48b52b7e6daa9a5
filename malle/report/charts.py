"""The report's charts: Altair specs rendered to SVG offline by vl-convert (no browser, no network)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import vl_convert

from malle.ops.severity import GRIDS
from malle.report import palette
from malle.report.palette import altair

if TYPE_CHECKING:
    import altair as alt

CURVE_POINTS = 150  # per method: a precision-recall curve has one point per query; the chart needs far fewer
HEATMAP_CELL = 44


def svg(chart: alt.TopLevelMixin) -> str:
    """Inline SVG of ``chart``; the XML prologue is dropped so the SVG can sit inside HTML."""
    out = vl_convert.vegalite_to_svg(chart.to_json())
    return out[out.index("<svg"):]


def heatmap(data: pd.DataFrame, row: str, column: str, value: str, title: str, row_title: str,
            column_title: str, fmt: str = ".2f", domain: tuple[float, float] | None = (0.0, 1.0)) -> str:
    """One coloured cell per (row, column) with its value written in it."""
    alt = altair()
    rows = list(dict.fromkeys(data[row].astype(str)))
    columns = list(dict.fromkeys(data[column].astype(str)))
    data = data.assign(**{row: data[row].astype(str), column: data[column].astype(str)})
    scale = alt.Scale(scheme="redyellowgreen", domain=list(domain)) if domain else alt.Scale(scheme="oranges")
    base = alt.Chart(data, title=title).encode(
        x=alt.X(f"{column}:N", title=column_title, sort=columns,
                axis=alt.Axis(labelAngle=-30, labelLimit=180, labelOverlap=False)),  # every column labelled
        y=alt.Y(f"{row}:N", title=row_title, sort=rows, axis=alt.Axis(labelOverlap=False)))
    cells = base.mark_rect().encode(color=alt.Color(f"{value}:Q", scale=scale, title=value.replace("_", " ")))
    # Dark cells (both ends of the red-green scale, the top of the orange one) take white text.
    dark = (f"datum['{value}'] < 0.2 || datum['{value}'] > 0.8" if domain
            else f"datum['{value}'] > {0.6 * float(data[value].max())}")
    labels = base.mark_text(fontSize=11).encode(text=alt.Text(f"{value}:Q", format=fmt),
                                                color=alt.condition(dark, alt.value("white"), alt.value("black")))
    width = max(HEATMAP_CELL * 2 * len(columns), 240)
    return svg((cells + labels).properties(width=width, height=24 * len(rows)))


def pr_curves(curves: pd.DataFrame, labels: dict[str, str]) -> str:
    """Precision against recall per method, each thinned to ``CURVE_POINTS`` points."""
    alt = altair()
    data = thin_curves(curves).assign(label=lambda d: d["method"].map(labels).fillna(d["method"]))
    lines = alt.Chart(data, title="Precision–recall over copies and distractor queries").mark_line().encode(
        x=alt.X("recall:Q", title="recall", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("precision:Q", title="precision", scale=alt.Scale(domain=[0, 1])),
        color=palette.colour_encoding(labels, "label", legend=alt.Legend(orient="bottom", columns=1, labelLimit=500)))
    p90 = alt.Chart(pd.DataFrame({"precision": [0.9]})).mark_rule(strokeDash=[4, 4], color="#888").encode(
        y="precision:Q")
    return svg((lines + p90).properties(width=520, height=320))


def thin_curves(curves: pd.DataFrame, points: int = CURVE_POINTS) -> pd.DataFrame:
    """Evenly spaced rows of each method's curve, keeping its first and last point."""
    parts = []
    for _, part in curves.groupby("method", sort=False):
        keep = np.unique(np.linspace(0, len(part) - 1, min(points, len(part))).round().astype(int))
        parts.append(part.iloc[keep])
    return pd.concat(parts, ignore_index=True) if parts else curves


def with_strength(table: pd.DataFrame) -> pd.DataFrame:
    """A sweep table with each level's strength in its op's own unit (``strength``, as text: an axis label)."""
    levels = zip(table["op"], table["level"])
    return table.assign(strength=[f"{GRIDS[op].values[int(level)]:g}" for op, level in levels])


def severity_chart(table: pd.DataFrame, labels: dict[str, str], min_recall: float, width: int = 150,
                   height: int = 110, columns: int = 4, legend: alt.Legend | None = None) -> alt.ConcatChart:
    """One panel per op swept, a line per method (its own colour): Recall@1 against the op's strength in its own
    unit (an angle, a JPEG quality...), strength growing to the right; the dashed line is the breaking point's bar.
    Only the ops swept get a panel, so no empty axes are drawn. The dashboard's Robustness page draws the same."""
    alt = altair()
    data = with_strength(table).assign(label=lambda d: d["method"].map(labels).fillna(d["method"]))
    panels = []
    for op in dict.fromkeys(data["op"]):
        part, grid = data[data["op"] == op], GRIDS[op]
        lines = alt.Chart(part, title=op).mark_line(point=True).encode(
            x=alt.X("strength:O", title=f"{grid.unit} (stronger →)", sort=[f"{v:g}" for v in grid.values],
                    axis=alt.Axis(labelAngle=0, labelOverlap=False)),
            y=alt.Y("recall_at_1:Q", title="Recall@1", scale=alt.Scale(domain=[0, 1])),
            color=palette.colour_encoding(labels, "label", legend=legend),
            tooltip=["label:N", "param:N", alt.Tooltip("recall_at_1:Q", format=".3f"),
                     alt.Tooltip("recall_at_10:Q", format=".3f"), "n:Q"])
        bar = alt.Chart(pd.DataFrame({"y": [min_recall]})).mark_rule(strokeDash=[4, 4], color="#888").encode(y="y:Q")
        panels.append(alt.layer(lines, bar).properties(width=width, height=height))
    return alt.concat(*panels, columns=columns)


def severity_curves(table: pd.DataFrame, labels: dict[str, str], min_recall: float) -> str:
    """The severity panels as SVG, the legend under them."""
    alt = altair()
    return svg(severity_chart(table, labels, min_recall,
                              legend=alt.Legend(orient="bottom", columns=1, labelLimit=500)))

"""The report's charts: Altair specs rendered to SVG offline by vl-convert (no browser, no network)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import vl_convert

CURVE_POINTS = 150  # per method: a precision-recall curve has one point per query; the chart needs far fewer
HEATMAP_CELL = 44


def svg(chart: alt.TopLevelMixin) -> str:
    """Inline SVG of ``chart``; the XML prologue is dropped so the SVG can sit inside HTML."""
    out = vl_convert.vegalite_to_svg(chart.to_json())
    return out[out.index("<svg"):]


def heatmap(data: pd.DataFrame, row: str, column: str, value: str, title: str, row_title: str,
            column_title: str, fmt: str = ".2f", domain: tuple[float, float] | None = (0.0, 1.0)) -> str:
    """One coloured cell per (row, column) with its value written in it."""
    rows = list(dict.fromkeys(data[row].astype(str)))
    columns = list(dict.fromkeys(data[column].astype(str)))
    data = data.assign(**{row: data[row].astype(str), column: data[column].astype(str)})
    scale = alt.Scale(scheme="redyellowgreen", domain=list(domain)) if domain else alt.Scale(scheme="oranges")
    base = alt.Chart(data, title=title).encode(
        x=alt.X(f"{column}:N", title=column_title, sort=columns, axis=alt.Axis(labelAngle=-30, labelLimit=180)),
        y=alt.Y(f"{row}:N", title=row_title, sort=rows))
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
    data = thin_curves(curves).assign(label=lambda d: d["method"].map(labels).fillna(d["method"]))
    lines = alt.Chart(data, title="Precision–recall over copies and distractor queries").mark_line().encode(
        x=alt.X("recall:Q", title="recall", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("precision:Q", title="precision", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("label:N", title="method", legend=alt.Legend(orient="bottom", columns=1, labelLimit=500)))
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


def severity_curves(table: pd.DataFrame, labels: dict[str, str], min_recall: float) -> str:
    """Recall@1 by level, one small chart per op, a line per method; the dashed line is the breaking bar."""
    data = table.assign(label=table["method"].map(labels).fillna(table["method"]))
    lines = alt.Chart().mark_line(point=True).encode(
        x=alt.X("level:O", title="level"), y=alt.Y("recall_at_1:Q", title="Recall@1", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("label:N", title="method", legend=alt.Legend(orient="bottom", columns=1, labelLimit=500)),
        tooltip=["label:N", "param:N", "recall_at_1:Q"])
    bar = alt.Chart().mark_rule(strokeDash=[4, 4], color="#888").encode(y=alt.datum(min_recall))
    layered = alt.layer(lines, bar, data=data).properties(width=150, height=110)
    return svg(layered.facet(facet=alt.Facet("op:N", title=None), columns=4))

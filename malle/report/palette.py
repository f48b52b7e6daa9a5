"""One colour and one short name per method, for every chart of the dashboard and of the report.

A method keeps its colour whatever else is selected (pHash is red on every page and in the report), so
colours are keyed by the method, not by its position in a chart. Charts show short names ("pHash",
"SSCD distilled+regions"); the full labels (family, weights, engine, precision) go in one legend beside them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import pandas as pd

from malle.descriptors import known_class
from malle.errors import import_extra
from malle.tricks.methods import parse

if TYPE_CHECKING:
    import altair as alt

# The built-in methods, each its own hue (Tableau 10): the families' usual pairs stay apart.
FIXED = {
    "sscd_distilled": "#1f77b4",
    "sscd": "#17becf",
    "efficientnet_lite2": "#ff7f0e",
    "resnet50": "#8c564b",
    "phash": "#d62728",
    "pdq": "#2ca02c",
    "pdq_dihedral": "#9467bd",
    "dhash": "#e377c2",
    "ahash": "#7f7f7f",
    "whash": "#bcbd22",
}
# Methods with matching tricks and user models: Tableau 20's light and dark extras, picked by the name's checksum
# so that a method gets the same one on every page and in every run.
EXTRA = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
         "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


def altair():
    """The altair module, imported when a chart is drawn: it comes with the 'dashboard' extra, which a base
    install lacks (then one line says so). The report's charts and the dashboard's colours both ask here."""
    return import_extra("altair", "the report's charts")


def colour(method: str) -> str:
    return FIXED.get(method) or EXTRA[zlib.crc32(method.encode()) % len(EXTRA)]


def short_name(method: str) -> str:
    """The method without details, with its tricks: "SSCD distilled", "pHash", "EfficientNet-Lite2+verify"."""
    parsed = parse(method)
    cls = known_class(parsed.base)  # None for a spec's name, which is the user's own short name
    return (cls.short_name or cls.name if cls is not None else parsed.base) + parsed.short()


def short_names(methods: Iterable[str]) -> dict[str, str]:
    """{method: short name}; two methods that would share a name keep their registry names instead."""
    names = {m: short_name(m) for m in methods}
    taken = list(names.values())
    return {m: name if taken.count(name) == 1 else m for m, name in names.items()}


def colour_encoding(names: Mapping[str, str], field: str = "name", title: str | None = "method",
                    legend: alt.Legend | None = None) -> alt.Color:
    """A colour channel on ``field`` (holding ``names``' values) that gives each method its own colour."""
    alt = altair()
    methods = list(names)
    scale = alt.Scale(domain=[names[m] for m in methods], range=[colour(m) for m in methods])
    return alt.Color(f"{field}:N", title=title, scale=scale,
                     legend=legend if legend is not None else alt.Legend(labelLimit=260))


def with_names(table: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    """``table`` with a ``name`` column: each row's method by its short name."""
    return table.assign(name=table["method"].map(names).fillna(table["method"]))


def svg_rendered[Chart: alt.TopLevelMixin](chart: Chart) -> Chart:
    """The chart drawn as SVG in the browser (Streamlit's default is canvas for large data): text stays text, so
    labels are crisp in screenshots and the browser test can count each axis's labels."""
    chart.usermeta = {"embedOptions": {"renderer": "svg"}}  # type: ignore[attr-defined]  # a Vega-Lite key, not in altair's stub
    return chart

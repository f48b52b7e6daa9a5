"""Per-transformation page: which ops (and how many of them) hurt which method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd

from malle.dashboard.shared import LEVELS, level_slice, op_title
from malle.evaluation import recall as evaluate
from malle.lab.experiment import Results
from malle.report.palette import colour_encoding, short_names, svg_rendered, with_names


def per_op_wide(per_op: pd.DataFrame, k: int, level: str, names: dict[str, str]) -> pd.DataFrame:
    """Rows ops (hardest first by mean over methods), columns methods by short name, plus the query count."""
    part = with_names(level_slice(per_op, k, level), names)
    table = part.pivot(index="op", columns="name", values="recall")[list(dict.fromkeys(part["name"]))]
    table["queries"] = part.groupby("op")["n"].first()
    table = table.loc[table.drop(columns="queries").mean(axis=1).sort_values().index]
    table.index = [op_title(op) for op in table.index]
    table.index.name = f"{level} Recall@{k} by op"
    return table


def op_heatmap(per_op: pd.DataFrame, k: int, level: str, names: dict[str, str]) -> alt.LayerChart | alt.FacetChart:
    """op × method, colour = recall, with the value written in each cell; hardest ops on top. The columns are the
    table's (``per_op_wide``), in its order, each labelled: labels never overlap, so none is dropped."""
    data = with_names(level_slice(per_op, k, level), names).assign(op_title=lambda d: d["op"].map(op_title))
    order = data.groupby("op_title")["recall"].mean().sort_values().index.tolist()
    columns = list(dict.fromkeys(data["name"]))
    base = alt.Chart(data).encode(  # the page's heading names it
        x=alt.X("name:N", title="method", sort=columns,
                axis=alt.Axis(labelAngle=0, labelLimit=160, labelOverlap=False, orient="top")),
        y=alt.Y("op_title:N", title="op in the chain", sort=order, axis=alt.Axis(labelLimit=250, labelOverlap=False)))
    cells = base.mark_rect().encode(
        color=alt.Color("recall:Q", title=f"R@{k}", scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1])),
        tooltip=["op_title:N", "name:N", alt.Tooltip("recall:Q", format=".4f"), alt.Tooltip("n:Q", title="queries")])
    text = base.mark_text(fontSize=13).encode(
        text=alt.Text("recall:Q", format=".2f"),
        color=alt.condition("datum.recall > 0.3 && datum.recall < 0.8", alt.value("black"), alt.value("white")))
    # Streamlit fits the whole chart, axes included, into this height: 26 px a row plus the top axis and its title.
    return svg_rendered(alt.layer(cells, text).properties(width=max(150 * len(columns), 300),
                                                          height=26 * len(order) + 90))


def hardest_ops(per_op: pd.DataFrame, k: int, level: str) -> pd.DataFrame:
    """Per method, the op whose queries have the lowest Recall@K."""
    part = level_slice(per_op, k, level).sort_values(["recall", "op"])
    return part.groupby("method", sort=False).head(1).reset_index(drop=True)


def hardest_op_sentences(per_op: pd.DataFrame, k: int, level: str, names: dict[str, str]) -> list[str]:
    """Per method, its hardest op; a method that misses no query at this K says so instead of naming an op whose
    Recall@K is 1 as the 'hardest'."""
    sentences = []
    for row in hardest_ops(per_op, k, level).itertuples():
        name = names.get(row.method, row.method)
        sentences.append(f"**{name}** misses no query at {level} Recall@{k}: no op makes it fail here."
                         if row.recall >= 1 else
                         f"Hardest op for **{name}**: **{op_title(row.op)}**, {level} Recall@{k} = {row.recall:.4f} "
                         f"over {row.n} queries containing it.")
    return sentences


def perfect_methods(per_op: pd.DataFrame, k: int, level: str) -> list[str]:
    """The methods that miss no query at this K and level (the page points them to where failures are)."""
    return [row.method for row in hardest_ops(per_op, k, level).itertuples() if row.recall >= 1]


def chain_length_chart(by_length: pd.DataFrame, k: int, level: str, names: dict[str, str]) -> alt.Chart:
    data = with_names(level_slice(by_length, k, level), names)
    return svg_rendered(alt.Chart(data).mark_line(point=True).encode(  # the page's heading names it
        x=alt.X("chain_length:O", title="ops in the chain", axis=alt.Axis(labelAngle=0, labelOverlap=False)),
        y=alt.Y("recall:Q", title=f"Recall@{k}", scale=alt.Scale(zero=False)),
        color=colour_encoding(names),
        tooltip=["name:N", "chain_length:O", alt.Tooltip("recall:Q", format=".4f"),
                 alt.Tooltip("n:Q", title="queries")],
    ))


def chain_length_wide(by_length: pd.DataFrame, k: int, level: str, names: dict[str, str]) -> pd.DataFrame:
    part = with_names(level_slice(by_length, k, level), names)
    table = part.pivot(index="chain_length", columns="name", values="recall")[list(dict.fromkeys(part["name"]))]
    table["queries"] = part.groupby("chain_length")["n"].first()
    table.index.name = "ops in the chain"
    return table


@dataclass
class Breakdown:
    """Everything the per-transformation page shows for one op filter and one K."""

    n_queries: int  # per method, after the filter
    recall: pd.DataFrame  # method, level, k, recall, n
    per_op: pd.DataFrame  # op, method, level, k, recall, n
    by_length: pd.DataFrame  # chain_length, method, level, k, recall, n


def breakdown(results: Results, include: Sequence[str], exclude: Sequence[str], k: int) -> Breakdown | None:
    """Recall@K overall, per op and per chain length over the filtered queries; None if none match."""
    kept = evaluate.filter_by_ops(results.per_query, include, exclude)
    if kept.empty:
        return None
    return Breakdown(int(kept.groupby("method").size().max()), evaluate.recall_at_k(kept, [k]),
                     evaluate.per_op_recall(kept, [k]), evaluate.recall_by_chain_length(kept, [k]))


def recall_at_k_wide(recall: pd.DataFrame, k: int, names: dict[str, str]) -> pd.DataFrame:
    """Rows methods, columns levels: one K at a glance."""
    part = with_names(recall[recall["k"] == k], names)
    table = part.pivot(index="name", columns="level", values="recall")[list(LEVELS)]
    table.columns = [f"{level} Recall@{k}" for level in table.columns]
    table.index.name = "method"
    return table.loc[list(dict.fromkeys(part["name"]))]


def attribution_wide(results: Results) -> pd.DataFrame:
    """Op × method: the share of each method's misses (chains of 2+ ops) charged to the op."""
    table = results.attribution()
    if table.empty:
        return pd.DataFrame()
    names = short_names(results.methods)
    wide = with_names(table, names).pivot(index="op", columns="name", values="share").fillna(0.0)
    wide = wide[[name for name in names.values() if name in wide.columns]]  # the methods' order, as elsewhere
    wide = wide.loc[wide.mean(axis=1).sort_values(ascending=False).index]
    wide.index = [op_title(op) for op in wide.index]
    wide.index.name = "charged with the miss"
    return wide

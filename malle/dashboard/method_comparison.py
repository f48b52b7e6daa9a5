"""Method comparison page: where two methods agree, how well their scores separate, their curves."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from malle.dashboard.shared import Thumb
from malle.evaluation import recall as evaluate
from malle.lab import published as report
from malle.lab.experiment import Experiment, Results
from malle.report.palette import svg_rendered
from malle.retrieval.metrics import Metric

AGREEMENT_CELLS = ("both", "only_a", "only_b", "neither")


def default_pair(methods: Sequence[str]) -> tuple[str, str]:
    """The counterparts of the published pair (a CNN against a hash) when both are here, else the first two."""
    pairs = {published: method for method, published in report.reference_pairs(methods).items()}
    first = pairs.get("resnet50", methods[0])
    phash = pairs.get("phash")
    second = phash if phash is not None and phash != first else next(m for m in methods if m != first)
    return first, second


def hits(per_query: pd.DataFrame, method: str, k: int, level: str) -> pd.Series:
    """Whether each query (index: query file) hits at K for one method."""
    return evaluate.hit_at_k(per_query[per_query["method"] == method].set_index("query"), k, level)


def agreement_table(results: Results, a: str, b: str, k: int, level: str) -> pd.DataFrame:
    """One row per query: whether A and B hit at K, and which agreement cell that is."""
    per_query = results.per_query
    base = per_query[per_query["method"] == a].set_index("query")[["source", "ops"]]
    table = base.assign(hit_a=hits(per_query, a, k, level), hit_b=hits(per_query, b, k, level))
    cells = np.select([table.hit_a & table.hit_b, table.hit_a, table.hit_b], AGREEMENT_CELLS[:3], "neither")
    return table.assign(cell=cells).reset_index()


def agreement_counts(table: pd.DataFrame) -> dict[str, int]:
    counts = table["cell"].value_counts()
    return {cell: int(counts.get(cell, 0)) for cell in AGREEMENT_CELLS}


def agreement_matrix(table: pd.DataFrame, label_a: str, label_b: str) -> pd.DataFrame:
    """2 × 2 counts: rows A hit / A missed, columns B hit / B missed."""
    counts = agreement_counts(table)
    return pd.DataFrame(
        [[counts["both"], counts["only_a"]], [counts["only_b"], counts["neither"]]],
        index=[f"{label_a} hit", f"{label_a} missed"], columns=[f"{label_b} hit", f"{label_b} missed"])


def cell_title(cell: str, label_a: str, label_b: str) -> str:
    return {"both": "both hit", "only_a": f"only {label_a}", "only_b": f"only {label_b}",
            "neither": "neither"}[cell]


def query_and_original_thumbs(exp: Experiment, rows: pd.DataFrame) -> list[Thumb]:
    """Each query's thumbnail followed by its true original's."""
    thumbs = []
    for row in rows.itertuples():
        thumbs += [Thumb(exp.copies_dir / row.query, f"query {row.query}"),
                   Thumb(exp.originals_dir / row.source, f"true original {row.source}", True)]
    return thumbs


def score_chart(per_query: pd.DataFrame, method: str, label: str, metric: Metric) -> alt.Chart:
    """Histograms of the true original's score and the best wrong original's score."""
    part = per_query[per_query["method"] == method]
    data = pd.concat([
        pd.DataFrame({"score": part["true_score"], "kind": "true original"}),
        pd.DataFrame({"score": part["best_wrong_score"], "kind": "best wrong original"}),
    ], ignore_index=True).dropna()
    better = "higher" if metric.higher_is_better else "lower"
    return svg_rendered(alt.Chart(data, title=f"{label}: {metric.score_name} ({better} = more similar)").mark_bar(
        opacity=0.55, binSpacing=0).encode(
        x=alt.X("score:Q", bin=alt.Bin(maxbins=40), title=metric.score_name),
        y=alt.Y("count():Q", stack=None, title="queries"),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["true original", "best wrong original"],
                                                              range=["#2ca02c", "#d62728"])),
    ))


def separation_rate(per_query: pd.DataFrame, method: str, metric: Metric) -> float:
    """Share of queries whose true original scores strictly better than every wrong one."""
    part = per_query[per_query["method"] == method]
    better = metric.sort_key(part["true_score"].to_numpy()) < metric.sort_key(part["best_wrong_score"].to_numpy())
    return float(better.mean())


def pair_recall(results_recall: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    return results_recall[results_recall["method"].isin(list(methods))]

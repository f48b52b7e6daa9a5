"""Detection page: open-set copy detection with distractor queries, µAP, calibrated confidence, and a threshold
picker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from malle.dashboard.shared import Thumb
from malle.data.distractor_queries import COPY_KIND
from malle.evaluation import micro_ap as openset
from malle.evaluation import recall as evaluate
from malle.lab.experiment import Results
from malle.report.details import threshold_text
from malle.report.palette import colour_encoding, short_names, with_names
from malle.retrieval.metrics import Metric

# Short headers keep the tables inside the page; each header's full meaning is its tooltip.
SCORE_HEADERS = {
    "method": ("method", "the method's name; the legend below gives each one's full label"),
    "uap": ("µAP", "micro average precision over every query's top-10 predictions (ISC2021)"),
    "recall_at_p90": ("R@P90", "recall at precision 0.9"),
    "threshold_at_p90": ("threshold@P90", "the threshold giving precision 0.9 at the highest recall, in the method's "
                                          "own unit; the threshold picker below at 0.90 gives the same"),
    "n_queries": ("queries", "copies and distractor queries"),
    "n_positives": ("copies", "ground-truth pairs: one per copy"),
}
TRICK_HEADERS = {
    "method": ("method", "a method with matching tricks (METHOD+regions, +verify, +norm)"),
    "base": ("base", "the same method without its tricks"),
    "uap": ("µAP", "micro average precision with the tricks"),
    "uap_gain": ("ΔµAP", "µAP with the tricks less µAP of the base"),
    "recall_at_p90": ("R@P90", "recall at precision 0.9 with the tricks"),
    "recall_at_p90_gain": ("ΔR@P90", "recall at precision 0.9 with the tricks less the base's"),
    "recall_at_1": ("R@1", "instance Recall@1 with the tricks"),
    "recall_at_1_gain": ("ΔR@1", "instance Recall@1 with the tricks less the base's"),
    "tricks_ms_per_query": ("ms/query", "what the tricks cost per copy on top of the base's search, in ms"),
}


def short_headers(table: pd.DataFrame, headers: dict[str, tuple[str, str]]) -> tuple[pd.DataFrame, dict[str, str]]:
    """(the table with only ``headers``' columns, renamed short; {short header: its full meaning})."""
    kept = [c for c in headers if c in table.columns]
    return table[kept].rename(columns={c: headers[c][0] for c in kept}), {headers[c][0]: headers[c][1] for c in kept}


def column_config(table: pd.DataFrame, meanings: dict[str, str], fmt: str = "%.4f") -> dict:
    """Streamlit column settings: floats with ``fmt``, each header's meaning as its tooltip."""
    return {c: st.column_config.NumberColumn(format=fmt, help=meanings.get(c))
            if pd.api.types.is_float_dtype(table[c]) else st.column_config.Column(help=meanings.get(c))
            for c in table.columns}


def scores_table(results: Results) -> tuple[pd.DataFrame, dict[str, str]]:
    """µAP, recall at precision 0.9 and its threshold (in the method's unit) per method, best µAP first, under short
    headers and short method names."""
    table = results.openset().sort_values("uap", ascending=False)
    exp = results.experiment
    table = table.assign(threshold_at_p90=[threshold_text(exp.descriptor(m).metric, t, exp.descriptor(m).dim)
                                           for m, t in zip(table["method"], table["threshold_at_p90"])],
                         method=table["method"].map(short_names(results.methods)))
    return short_headers(table, SCORE_HEADERS)


def default_method(results: Results) -> str:
    """The picker's first method: the first (in the sidebar's order) that misses copies at precision 0.9, so the
    page opens on something to look at; else the first."""
    return next(iter(methods_with_errors(results)), results.methods[0])


def trick_table(results: Results) -> tuple[pd.DataFrame, dict[str, str]]:
    """Each method with matching tricks next to its base: what the tricks add and what they cost."""
    return short_headers(results.trick_gains(), TRICK_HEADERS)


def pr_chart(results: Results) -> alt.Chart:
    curves = results.pr_curves()
    names = short_names(results.methods)
    # A curve has a point per prediction; keep the upper envelope on a recall grid so the chart stays light.
    curves = curves.assign(recall=curves["recall"].round(3)).groupby(["method", "recall"], as_index=False)[
        "precision"].max()
    return alt.Chart(with_names(curves, names), title="Precision against recall, every prediction pooled").mark_line(
        interpolate="step-after").encode(
        x=alt.X("recall:Q", title="recall", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("precision:Q", title="precision", scale=alt.Scale(domain=[0, 1])),
        color=colour_encoding(names),
        tooltip=["name:N", alt.Tooltip("recall:Q", format=".3f"), alt.Tooltip("precision:Q", format=".3f")])


def method_predictions(results: Results, method: str) -> pd.DataFrame:
    return results.predictions([method])


@dataclass
class OperatingPoint:
    threshold: float  # as a similarity
    precision: float
    recall: float
    accepted: int
    false_positives: int
    per_op: pd.DataFrame  # op, recall, copies


def operating_point(results: Results, method: str, similarity: float) -> OperatingPoint:
    """Accept every prediction scoring at least ``similarity``: what that gives, overall and per op."""
    predictions = method_predictions(results, method)
    point = openset.at_threshold(predictions, similarity, n_positives=len(results.experiment.manifest))
    found = set(predictions[(predictions["score"] >= similarity) & predictions["is_match"]]["query"])
    copies = results.per_query[results.per_query["method"] == method]
    detected = copies.assign(hit=copies["query"].isin(found).astype(float))
    per_op = evaluate.explode_ops(detected).groupby("op")["hit"].agg(["mean", "size"]).reset_index()
    per_op = per_op.rename(columns={"mean": "recall", "size": "copies"}).sort_values("recall", ignore_index=True)
    return OperatingPoint(similarity, point["precision"], point["recall"], point["accepted"], point["false_positives"],
                          per_op)


def similarity_for_precision(results: Results, method: str, target: float) -> float:
    """The threshold (as a similarity) giving precision ``target`` at the highest recall; NaN if none does. The same
    definition as the scores table's threshold@P90 (``micro_ap.recall_at_precision``), so at 0.90 they agree."""
    predictions = method_predictions(results, method)
    _, curve = openset.score(predictions, n_positives=len(results.experiment.manifest))
    return openset.recall_at_precision(curve, target)[1]


def threshold_range(results: Results, method: str) -> tuple[float, float]:
    scores = method_predictions(results, method)["score"]
    return float(scores.min()), float(scores.max())


def native(metric: Metric, similarity: float) -> float:
    """A similarity back in the method's own unit (a Hamming distance for hashes)."""
    return metric.from_similarity(similarity) + 0.0  # + 0.0: never show "-0"


def as_similarity(metric: Metric, value: float) -> float:
    return float(metric.similarity(np.array([value]))[0])


def accepted_distractors(results: Results, method: str, similarity: float, limit: int = 8) -> list[Thumb]:
    """Distractor queries taken for copies at this threshold, each with the original it was matched to."""
    exp = results.experiment
    predictions = method_predictions(results, method)
    top = predictions[(predictions["rank"] == 1) & predictions["query"].isin(exp.distractor_manifest["file"])]
    wrong = top[top["score"] >= similarity].sort_values("score", ascending=False).head(limit)
    thumbs = []
    for row in wrong.itertuples():
        thumbs += [Thumb(exp.distractors_dir / row.query, f"distractor {row.query}"),
                   Thumb(exp.originals_dir / row.reference,
                         f"taken for {row.reference} · {score_words(exp, method, row.score)}")]
    return thumbs


def missed_copies(results: Results, method: str, similarity: float, limit: int = 8) -> list[Thumb]:
    """Copies whose original is not among the accepted predictions at this threshold, with that original."""
    exp = results.experiment
    predictions = method_predictions(results, method)
    found = set(predictions[(predictions["score"] >= similarity) & predictions["is_match"]]["query"])
    missed = exp.manifest[~exp.manifest["file"].isin(found)].head(limit)
    thumbs = []
    for row in missed.itertuples():
        thumbs += [Thumb(exp.copies_dir / row.file, f"missed copy {row.file}"),
                   Thumb(Path(exp.originals_dir) / row.source, f"its original {row.source}", True)]
    return thumbs


def score_words(exp, method: str, similarity: float) -> str:
    """A prediction's score (stored as a similarity) in the method's own unit: never a negated distance."""
    desc = exp.descriptor(method)
    return f"{desc.score_name} {desc.metric.format_score(desc.metric.from_similarity(similarity) + 0.0, desc.dim)}"


def methods_with_errors(results: Results) -> list[str]:
    """The methods that miss copies or accept distractors at precision 0.9: where the page has something to show."""
    table = results.openset().set_index("method")
    return [m for m in results.methods if m in table.index and table.loc[m, "recall_at_p90"] < 1]


CALIBRATION_HEADERS = {
    "method": ("method", "the method's name; the legend gives each one's full label"),
    "ece": ("ece", "expected calibration error on held-back queries: how far the stated confidence and the share of "
                   "true copies are apart, over 15 equal-mass bins (0 is perfect)"),
    "ece_top1": ("ece top-1", "the same, over each query's best prediction alone: the match a user looks at first"),
    "n_predictions": ("predictions", "every query's top-10 predictions, copies and distractor queries pooled"),
    "folds": ("folds", "queries split by a hash of their id; each fold is scored by the map fitted on the others"),
}


def calibration_table(results: Results) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per method: the ece of its confidence on held-back queries (calibration.json), best first."""
    table = pd.DataFrame([{"method": m, "ece": f["ece"], "ece_top1": f["ece_top1"], "n_predictions": f["n_predictions"],
                           "folds": f["folds"]} for m, f in results.calibration().items()]).sort_values(
        "ece", ignore_index=True)
    return short_headers(table.assign(method=table["method"].map(short_names(results.methods))), CALIBRATION_HEADERS)


def reliability_chart(results: Results) -> alt.LayerChart:
    """Stated confidence against the share of true copies, per bin of each query's held-back best prediction (over
    all ten, most bins sit at 0), one line per method in its colour; the diagonal is perfect calibration."""
    names = short_names(results.methods)
    curves = pd.concat([pd.DataFrame(f["reliability_top1"]).assign(method=m)
                        for m, f in results.calibration().items()], ignore_index=True)
    axis = alt.Scale(domain=[0, 1])
    diagonal = alt.Chart(pd.DataFrame({"confidence": [0.0, 1.0], "observed": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="#888888").encode(x="confidence:Q", y="observed:Q")
    lines = alt.Chart(with_names(curves, names)).mark_line(point=True).encode(
        x=alt.X("confidence:Q", title="stated confidence", scale=axis),
        y=alt.Y("observed:Q", title="share of true copies", scale=axis),
        color=colour_encoding(names),
        tooltip=["name:N", alt.Tooltip("confidence:Q", format=".3f"), alt.Tooltip("observed:Q", format=".3f"),
                 "count:Q"])
    return alt.LayerChart(layer=[diagonal, lines]).properties(
        title="Reliability of each query's best match, held-back queries")


def false_matches_by_kind(results: Results) -> pd.DataFrame:
    """Per kind of distractor query (copies of spare photos, each hard-negative kind): how many there are and, per
    method, how many have a prediction at or above the method's threshold at precision 0.9 (NaN where it has none):
    false matches, as no distractor query's original is in the database."""
    distractors = results.experiment.distractor_manifest
    kinds = distractors.set_index("file")["kind"] if "kind" in distractors.columns else \
        pd.Series(COPY_KIND, index=distractors["file"])
    table = kinds.value_counts().rename("queries").to_frame()
    thresholds = results.openset().set_index("method")["threshold_at_p90"]
    names = short_names(results.methods)
    for method in results.methods:
        if np.isnan(thresholds[method]):  # it never reaches precision 0.9: no threshold to count at
            table[names[method]] = np.nan
            continue
        predictions = method_predictions(results, method)
        wrong = predictions[~predictions["is_match"] & (predictions["score"] >= thresholds[method])
                            & predictions["query"].isin(kinds.index)]["query"].unique()
        table[names[method]] = kinds[wrong].value_counts().reindex(table.index, fill_value=0)
    return table.rename_axis("kind").reset_index()

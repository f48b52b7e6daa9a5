"""The report's Edits and Open set sections: which edits break which method, and detection with distractors."""

from __future__ import annotations

import pandas as pd

from malle.ops.severity import MIN_RECALL
from malle.report import charts
from malle.report.html import absent, chart, frame_table, number, paragraph, table, text
from malle.report.run_folder import RunFolder
from malle.report.summary import short
from malle.retrieval.metrics import Metric, metric_named


def _instance_r1(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    part = table[(table["level"] == "instance") & (table["k"] == 1)]
    return part.assign(method=part["method"].map(lambda m: short(labels.get(m) or m)))


def edits_section(run: RunFolder) -> str:
    labels = run.labels
    per_op = _instance_r1(run.per_op, labels)
    by_length = _instance_r1(run.by_chain_length, labels).sort_values("chain_length")
    parts = [paragraph("Instance Recall@1 of the copies whose chain contains each edit, and by the number of edits "
                       "in the chain. Green finds copies, red misses them.", "note"),
             chart(charts.heatmap(per_op, "op", "method", "recall", "Recall@1 by edit in the chain", "edit",
                                  "method"), "Recall@1 per edit and method"),
             chart(charts.heatmap(by_length, "chain_length", "method", "recall", "Recall@1 by chain length",
                                  "edits in the chain", "method"), "Recall@1 per chain length and method"),
             "<h3>Edits charged with misses (attribution)</h3>", attribution(run),
             "<h3>Severity: each edit alone, level by level</h3>", severity(run)]
    return "".join(parts)


def attribution(run: RunFolder) -> str:
    found = run.optional("attribution.csv")
    if found is None or found.empty:
        return absent("No attribution in this run: no miss of a chain of two or more edits to charge.")
    data = found.assign(method=found["method"].map(lambda m: short(run.labels.get(m) or m)))
    note = paragraph("For each miss of a chain of two or more edits, the edit whose removal restores the hit is "
                     "charged (shared when several do; \"the combination\" when no single removal does). Numbers "
                     "are misses charged.", "note")
    return note + chart(charts.heatmap(data, "op", "method", "misses_charged", "Misses charged to each edit",
                                       "edit", "method", fmt=".1f", domain=None), "Misses charged per edit")


def severity(run: RunFolder) -> str:
    sweep = run.optional("severity.csv")
    if sweep is None or sweep.empty:
        return absent("No severity curves in this run (python -m malle severity --out OUT adds them).")
    labels = {m: short(label) for m, label in run.labels.items()}
    parts = [paragraph(f"Recall@1 of every original with one edit alone, at growing strength. The breaking point "
                       f"is the first level whose Recall@1 falls below {MIN_RECALL}.", "note"),
             chart(charts.severity_curves(sweep, labels, MIN_RECALL), "Severity curves per edit")]
    broken = run.optional("breaking_points.csv")
    if broken is not None and not broken.empty:
        shown = broken.assign(method=broken["method"].map(lambda m: labels.get(m, m)),
                              level=broken["level"].astype(object).where(broken["level"].notna(), "holds"))
        parts.append(frame_table(shown.rename(columns={"recall_at_1": "Recall@1 there"}), 3))
    return "".join(parts)


def threshold_text(metric: Metric, similarity: float, dim: int) -> str:
    """A threshold (stored as a similarity: hashes as minus the distance) in the method's own unit: a cosine
    similarity at least, or a Hamming distance in bits at most; never negated. The dashboard says it the same way."""
    if pd.isna(similarity):
        return "precision 0.9 is never reached"
    relation = "≥" if metric.higher_is_better else "≤"
    return f"{metric.score_name} {relation} {metric.format_score(metric.from_similarity(similarity) + 0.0, dim)}"


def openset_section(run: RunFolder) -> str | None:
    """None when the run has no open set (the caller says so in one line)."""
    if run.openset is None:
        return None
    costs = run.costs.set_index("method")
    rows = []
    for r in run.openset.itertuples():
        rows.append([text(short(run.labels.get(r.method, r.method))),
                     number(r.uap, 4, {"check": "uap", "method": r.method}), number(r.recall_at_p90),
                     text(threshold_text(metric_named(costs.loc[r.method, "metric"]), r.threshold_at_p90,
                                         int(costs.loc[r.method, "dim"]))),
                     text(f"{int(r.n_queries)} ({int(r.n_positives)} copies)")])
    parts = [paragraph("Copies and distractor queries (edited images of photos not in the database) are searched "
                       "together; a good method scores its true matches above everything a distractor finds. µAP "
                       "is the micro average precision over all queries; R@P90 the share of copies found at the "
                       "threshold where precision is 0.9.", "note"),
             table(["method", "µAP", "R@P90", "threshold at P90", "queries"], rows)]
    curves = run.optional("pr_curve.parquet")
    if curves is not None and not curves.empty:
        parts.append(chart(charts.pr_curves(curves, {m: short(label) for m, label in run.labels.items()}),
                           "Precision-recall curves"))
    return "".join(parts)

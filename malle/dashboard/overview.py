"""Overview page: the headline comparison, the published reference, the data and the costs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd

from malle.dashboard.shared import LEVELS, with_labels
from malle.descriptors.families import Family, as_family
from malle.lab import published as report
from malle.lab.experiment import Experiment, Results
from malle.tricks.methods import parse


@dataclass
class MethodCard:
    method: str
    name: str  # the method without details, short enough for a card
    label: str
    r1: float  # instance Recall@1
    r10: float
    images_per_s: float


@dataclass
class FamilyCards:
    family: Family
    cards: list[MethodCard]

    @property
    def title(self) -> str:
        return self.family.title


def headline_cards(results: Results) -> list[FamilyCards]:
    """One card per method (instance R@1, R@10, images/s), grouped by family in the families' own order,
    best first within a family."""
    recall = results.recall([1, 10])
    instance = recall[recall["level"] == "instance"].pivot(index="method", columns="k", values="recall")
    costs = results.costs().set_index("method")
    groups: dict[Family, list[MethodCard]] = {}
    for method in results.methods:
        desc = results.experiment.descriptor(method)
        card = MethodCard(method, desc.card_name() + parse(method).short(), costs.loc[method, "label"],
                    float(instance.loc[method, 1]),
                    float(instance.loc[method, 10]), float(costs.loc[method, "images_per_s"]))
        groups.setdefault(as_family(desc.family), []).append(card)
    order = sorted(groups, key=lambda family: (family.order, family.title))
    return [FamilyCards(family, sorted(groups[family], key=lambda c: -c.r1)) for family in order]


def quality_caption(results: Results) -> str:
    """What the low-quality column counts, from the thresholds of the methods that score quality (PDQ's 50)."""
    by_threshold: dict[int, list[str]] = {}
    for method in results.methods:
        desc = results.experiment.descriptor(method)
        if desc.quality_threshold is not None:
            by_threshold.setdefault(desc.quality_threshold, []).append(desc.card_name())
    return "; ".join(f"for {' and '.join(names)} the share of hashes below the quality threshold of {threshold}"
                     for threshold, names in by_threshold.items())


def methods_table(results: Results) -> pd.DataFrame:
    """What each method is: family, weights and their licence, precision."""
    return results.methods_table().drop(columns="method")


def headline_tables(recall: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Instance and class Recall@K in the reference format: rows K, one column per method, headed by its name
    (``legend`` gives the full labels, so many methods still fit the page)."""
    return {level: report.short_wide(recall, level) for level in LEVELS}


def published_tables() -> dict[str, pd.DataFrame]:
    return headline_tables(report.reference_recall())


def legend(labels: dict[str, str]) -> str:
    """Markdown: each method's name and its full label (family, weights, engine, precision)."""
    return "\n".join(f"- `{method}`: {label}" for method, label in labels.items())


def recall_curve_chart(recall: pd.DataFrame, labels: dict[str, str], title: str = "Recall@K vs K") -> alt.Chart:
    """One line per method and level: colour = method, dash = level."""
    data = with_labels(recall, labels)
    return alt.Chart(data, title=title).mark_line(point=True).encode(
        x=alt.X("k:Q", title="K"),
        y=alt.Y("recall:Q", title="Recall@K", scale=alt.Scale(zero=False)),
        color=alt.Color("label:N", title="method"),
        strokeDash=alt.StrokeDash("level:N", title="level"),
        tooltip=["label:N", "level:N", "k:Q", alt.Tooltip("recall:Q", format=".4f")],
    )


def reference_caption(methods: Sequence[str]) -> str:
    """How the methods here relate to the published ones."""
    sentences = []
    pairs = report.reference_pairs(methods)
    for published, published_label in report.REFERENCE_LABELS.items():
        here = next((m for m, ref in pairs.items() if ref == published), None)
        family = report.method_family(published)
        if here == published:
            sentences.append(f"The {family} {report.display_name(here)} is the published method.")
        elif here:
            sentences.append(f"The {family} in this experiment is {report.display_name(here)}, not "
                             f"{published_label}: compare it with the published numbers with care.")
        else:
            sentences.append(f"No {family} is selected to compare with {published_label}.")
    return " ".join(sentences)


def dataset_summary(exp: Experiment, source: str, extra_skipped: int = 0) -> pd.DataFrame:
    cfg, manifest = exp.config, exp.manifest
    per_original = manifest.groupby("source").size()
    rows = [
        ("Data source", source),
        ("Folder", str(exp.data_root)),
        ("Originals", len(exp.originals)),
        ("Classes", exp.originals["class"].nunique()),
        ("Modified copies (queries)", len(manifest)),
        ("Copies per original", f"drawn from {', '.join(map(str, cfg.augment.copies))} "
                                f"(mean {per_original.mean():.2f})"),
        ("Ops per copy (chain length)", cfg.augment.describe()),
        ("Ops", ", ".join(cfg.augment.ops)),
        ("Seed", cfg.seed),
        ("Methods", ", ".join(exp.methods)),
        ("Skipped files", len(exp.skipped) + extra_skipped),
        ("Cache", str(exp.root)),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})


def versus_published(recall: pd.DataFrame, methods: Sequence[str], labels: dict[str, str]) -> pd.DataFrame:
    """Measured next to published: each published method next to its counterpart here."""
    table = report.versus_reference(recall, report.reference_pairs(methods))
    return table.assign(method=table["method"].map(labels),
                        reference_method=table["reference_method"].map(report.REFERENCE_LABELS))


def all_skipped(exp: Experiment, upload_skipped: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([upload_skipped, exp.skipped], ignore_index=True)[["path", "reason"]]


def costs_table(results: Results) -> pd.DataFrame:
    costs = results.costs()
    metrics = {m: results.experiment.descriptor(m).metric for m in costs["method"]}
    tricks = {"tricks ms per query": costs["tricks_ms_per_query"]} if "tricks_ms_per_query" in costs else {}
    return pd.DataFrame({
        "method": costs["label"],
        "family": costs["family"],
        "precision": costs["precision"],
        "runs on": costs["runtime"] + " · " + costs["cpu"],
        "dimensions": costs["dim"],
        "metric": costs["method"].map(lambda m: metrics[m].score_name),
        "images/s to encode": costs["images_per_s"],
        "ms per query": costs["ms_per_query"],
        "top-1 tie rate": costs["top1_tie_rate"],
        "R@1 if ties won": costs["r1_ties_won"],
        "R@1 if ties lost": costs["r1_ties_lost"],
        "low-quality hashes": costs["low_quality_share"],
        **tricks,
    })

"""Overview page: the headline comparison, the published reference, the data and the costs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd

from malle.dashboard.shared import LEVELS
from malle.descriptors.families import Family, as_family
from malle.lab import published as report
from malle.lab.experiment import Experiment, Results
from malle.ops import PRESETS
from malle.report.palette import colour_encoding, short_name, short_names, svg_rendered, with_names


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
        card = MethodCard(method, short_name(method), costs.loc[method, "label"],
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


# What each preset is for, in the headline's words (the sidebar's choice names the preset itself).
STORY = {"reference": "the published experiment", "hard": "the field's edits"}


def readiness_words(progress) -> str:
    """What a page says of another preset's run (a ``prefetch.JobProgress``): ready, or how far its computation is."""
    if progress.readiness.done:
        return "ready"
    # The sentence names the preset already: its text without the job's own name ("The hard preset: ...").
    return progress.text.removeprefix(f"{progress.label}: ") if progress.label else progress.readiness.label


def preset_sentence(preset: str, results: Results | None, waiting: str = "") -> str:
    """One sentence on what ``preset`` shows: its best and weakest method's instance R@1, from ``results``; while
    they are not ready, what is being done about it (``waiting``)."""
    what = f"**{preset}**, {STORY.get(preset, 'a preset')} ({PRESETS[preset].description.split(': ', 1)[-1]})"
    if results is None:
        return f"{what}: {waiting or 'computed when you pick it in the sidebar'}."
    recall = results.recall([1])
    r1 = recall[recall["level"] == "instance"].set_index("method")["recall"]
    names = short_names(results.methods)
    best, worst = r1.idxmax(), r1.idxmin()
    n = int((results.per_query["method"] == best).sum())
    found = f"{names[best]} ranks the true original first for {r1[best]:.1%} of {n} copies"
    if worst != best:
        found += f", {names[worst]} for {r1[worst]:.1%}"
    verdict = ("; even the best method misses some: the failures to analyse are here" if r1[best] < 1
               else "; the best method misses none")
    return f"{what}: {found}{verdict}."


def headline_tables(recall: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Instance and class Recall@K in the reference format: rows K, one column per method, headed by its short name
    (the legend gives the full labels, so many methods still fit the page)."""
    names = short_names(dict.fromkeys(recall["method"]))
    return {level: report.short_wide(recall, level).rename(columns=names) for level in LEVELS}


def published_tables() -> dict[str, pd.DataFrame]:
    return {level: report.short_wide(report.reference_recall(), level).rename(columns=report.REFERENCE_LABELS)
            for level in LEVELS}




def recall_curve_chart(recall: pd.DataFrame,
                       title: str = "Recall@K vs K (solid: instance level, dashed: class level)") -> alt.Chart:
    """One line per method and level: colour = method (its colour on every page), dash = level."""
    names = short_names(dict.fromkeys(recall["method"]))
    return svg_rendered(alt.Chart(with_names(recall, names), title=title).mark_line(point=True).encode(
        x=alt.X("k:Q", title="K"),
        y=alt.Y("recall:Q", title="Recall@K", scale=alt.Scale(zero=False)),
        color=colour_encoding(names),
        # The title says which dash is which: a dash legend's symbols draw blank in Streamlit's theme.
        strokeDash=alt.StrokeDash("level:N", legend=None, scale=alt.Scale(domain=["instance", "class"],
                                                                          range=[[1, 0], [6, 4]])),
        tooltip=["name:N", "level:N", "k:Q", alt.Tooltip("recall:Q", format=".4f")],
    ))


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


def versus_published(recall: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Measured next to published: each published method next to its counterpart here."""
    table = report.versus_reference(recall, report.reference_pairs(methods))
    return table.assign(method=table["method"].map(short_names(methods)),
                        reference_method=table["reference_method"].map(report.REFERENCE_LABELS))


def all_skipped(exp: Experiment, upload_skipped: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([upload_skipped, exp.skipped], ignore_index=True)[["path", "reason"]]


def costs_table(results: Results) -> pd.DataFrame:
    """One row per measure, one column per method (short names): three or four method columns fit any screen,
    where a dozen measure columns ran off it. Values are text, each in its measure's format."""
    costs = results.costs()
    names = short_names(results.methods)
    rows = {
        "runs on": costs["runtime"],
        "precision": costs["precision"],
        "CPU": costs["cpu"],
        "dimensions": costs["dim"].map(str),
        "metric": costs["method"].map(lambda m: results.experiment.descriptor(m).metric.score_name),
        "images/s to encode": costs["images_per_s"].map(lambda v: f"{v:,.1f}"),
        "ms per query": costs["ms_per_query"].map(lambda v: f"{v:.3f}"),
        "top-1 tie rate": costs["top1_tie_rate"].map(lambda v: f"{v:.3f}"),
        "R@1 if ties won": costs["r1_ties_won"].map(lambda v: f"{v:.4f}"),
        "R@1 if ties lost": costs["r1_ties_lost"].map(lambda v: f"{v:.4f}"),
        "low-quality hashes": costs["low_quality_share"].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}"),
    }
    if "tricks_ms_per_query" in costs:
        rows["tricks ms per query"] = costs["tricks_ms_per_query"].map(lambda v: "–" if pd.isna(v) else f"{v:.1f}")
    table = pd.DataFrame({measure: list(values) for measure, values in rows.items()},
                         index=[names[m] for m in costs["method"]]).T
    table.index.name = "measure"
    return table

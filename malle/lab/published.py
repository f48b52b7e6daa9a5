"""Recall tables in the reference experiment's format, and its published numbers."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import pandas as pd

from malle.descriptors import family_of, known_class
from malle.tricks.methods import parse

WIDTH = 100  # what the CLI prints fits this many columns; the CSVs hold the rest

# Published instance/class Recall@K of the reference experiment (200 ImageNet originals).
_PUBLISHED = {
    # k: (instance ResNet-50, instance pHash, class ResNet-50, class pHash)
    1: (0.9425, 0.5486, 0.9518, 0.5511),
    3: (0.9662, 0.6036, 0.9679, 0.6120),
    5: (0.9763, 0.6281, 0.9797, 0.6407),
    10: (0.9814, 0.6779, 0.9831, 0.6974),
    11: (0.9822, 0.6855, 0.9839, 0.7033),
}
REFERENCE_LABELS = {"resnet50": "ResNet-50 (published)", "phash": "pHash (published)"}


def reference_pairs(methods: Sequence[str]) -> dict[str, str]:
    """{method run here: published method it stands next to}: the same method when it ran,
    else the first method of the same family (an ImageNet CNN for ResNet-50, a hash for pHash)."""
    pairs = {}
    bases = [m for m in methods if not parse(m).is_derived]  # a method with matching tricks is not the published one
    for published in REFERENCE_LABELS:
        family = method_family(published)
        same = [m for m in bases if m == published] or [m for m in bases if method_family(m) == family]
        if same and same[0] not in pairs:
            pairs[same[0]] = published
    return pairs


def method_family(method: str) -> str:
    """The family of any method (built-in, spec, plug-in), derived ones by their base."""
    return family_of(parse(method).base)


def display_name(method: str) -> str:
    """A method's name for sentences: its base's display name (a spec's: its name), with its matching tricks."""
    parsed = parse(method)
    cls = known_class(parsed.base)
    return parsed.label(cls.display_name() if cls is not None else parsed.base)


def reference_recall() -> pd.DataFrame:
    """The published numbers as a ``method, level, k, recall`` table."""
    rows = []
    for k, (ir, ip, cr, cp) in _PUBLISHED.items():
        rows += [("resnet50", "instance", k, ir), ("phash", "instance", k, ip),
                 ("resnet50", "class", k, cr), ("phash", "class", k, cp)]
    return pd.DataFrame(rows, columns=["method", "level", "k", "recall"])


def wide(recall: pd.DataFrame, level: str, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One level as a K-by-method table, columns in the table's method order."""
    part = recall[recall["level"] == level]
    table = part.pivot(index="k", columns="method", values="recall")[list(dict.fromkeys(part["method"]))]
    table.index.name = "K"
    table.columns = [f"{level} Recall@K, {(labels or {}).get(m, m)}" for m in table.columns]
    return table


def short_wide(recall: pd.DataFrame, level: str) -> pd.DataFrame:
    """One level as a K-by-method table headed by the method names (``legend`` gives their full labels)."""
    part = recall[recall["level"] == level]
    table = part.pivot(index="k", columns="method", values="recall")[list(dict.fromkeys(part["method"]))]
    table.index.name, table.columns.name = "K", None
    return table


def legend(labels: Mapping[str, str], width: int = WIDTH) -> str:
    """``method: full label`` per method, wrapped to ``width`` columns."""
    return "\n".join(textwrap.fill(f"{method}: {label}", width, subsequent_indent="    ")
                     for method, label in labels.items())


def fixed_width(table: pd.DataFrame, width: int = WIDTH, digits: int = 4, **options) -> str:
    """A table as text within ``width`` columns (wide tables wrap into column blocks)."""
    return table.to_string(float_format=lambda x: f"{x:.{digits}f}", line_width=width, **options)


def format_tables(recall: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    """The two recall tables (instance, then class) as text within ``WIDTH`` columns, headed by the method names,
    then the legend of full labels."""
    blocks = [f"{level.capitalize()} Recall@K\n" + fixed_width(short_wide(recall, level))
              for level in ("instance", "class")]
    if labels:
        blocks.append(legend(labels))
    return "\n\n".join(blocks)


def versus_reference(recall: pd.DataFrame, method_pairs: Mapping[str, str]) -> pd.DataFrame:
    """Measured next to published, e.g. ``{"efficientnet_lite2": "resnet50", "phash": "phash"}``."""
    ref = reference_recall().rename(columns={"method": "reference_method", "recall": "published"})
    measured = recall[recall["method"].isin(list(method_pairs))].assign(
        reference_method=lambda d: d["method"].map(method_pairs))
    out = measured.merge(ref, on=["reference_method", "level", "k"], how="inner")
    out["difference"] = out["recall"] - out["published"]
    return out[["level", "k", "method", "recall", "reference_method", "published", "difference"]]


def costs_summary(costs: pd.DataFrame) -> pd.DataFrame:
    """The costs worth printing: encoding speed, search (and matching tricks) per query, ties."""
    table = pd.DataFrame({"method": costs["method"], "images/s": costs["images_per_s"],
                          "ms/query": costs["ms_per_query"], "top-1 ties": costs["top1_tie_rate"]})
    if "tricks_ms_per_query" in costs:
        table["tricks ms/query"] = costs["tricks_ms_per_query"]
    return table


def openset_summary(openset: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"method": openset["method"], "µAP": openset["uap"], "R@P90": openset["recall_at_p90"],
                         "threshold@P90": openset["threshold_at_p90"], "queries": openset["n_queries"]})


def printed_gain(gain: pd.Series) -> pd.Series:
    """A gain as printed to 4 decimals: one too small to show is 0, not -0.0000 (a sign with nothing after it)."""
    return gain.round(4) + 0.0


def tricks_summary(gains: pd.DataFrame) -> pd.DataFrame:
    """Per derived method: what its tricks add over its base, and their cost."""
    table = pd.DataFrame({"method": gains["method"], "R@1": gains["recall_at_1"],
                          "ΔR@1": printed_gain(gains["recall_at_1_gain"])})
    if "uap" in gains:
        table = table.assign(**{"µAP": gains["uap"], "ΔµAP": printed_gain(gains["uap_gain"]),
                                "R@P90": gains["recall_at_p90"], "ΔR@P90": printed_gain(gains["recall_at_p90_gain"])})
    return table.assign(**{"ms/query": gains["tricks_ms_per_query"]})

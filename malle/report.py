"""Recall tables in the reference experiment's format, and its published numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from .descriptors import DESCRIPTORS

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
    for published in REFERENCE_LABELS:
        family = DESCRIPTORS[published].family
        same = [m for m in methods if m == published] or [m for m in methods if DESCRIPTORS[m].family == family]
        if same and same[0] not in pairs:
            pairs[same[0]] = published
    return pairs


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


def format_tables(recall: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    """The two recall tables (instance, then class) as fixed-width text."""
    blocks = []
    for level in ("instance", "class"):
        blocks.append(wide(recall, level, labels).to_string(float_format=lambda x: f"{x:.4f}"))
    return "\n\n".join(blocks)


def versus_reference(recall: pd.DataFrame, method_pairs: Mapping[str, str]) -> pd.DataFrame:
    """Measured next to published, e.g. ``{"efficientnet_lite2": "resnet50", "phash": "phash"}``."""
    ref = reference_recall().rename(columns={"method": "reference_method", "recall": "published"})
    measured = recall[recall["method"].isin(list(method_pairs))].assign(
        reference_method=lambda d: d["method"].map(method_pairs))
    out = measured.merge(ref, on=["reference_method", "level", "k"], how="inner")
    out["difference"] = out["recall"] - out["published"]
    return out[["level", "k", "method", "recall", "reference_method", "published", "difference"]]

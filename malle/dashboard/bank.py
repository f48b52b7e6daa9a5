"""The Bank page's logic, without Streamlit: which bank the dashboard may open, a query's matches as cards
with their scores against the collection's threshold, and pages of items.

The dashboard opens a bank only inside the folders it may read (``--allowed-root`` or
``$MALLE_ALLOWED_ROOTS``, as for datasets); ``$MALLE_BANK`` names the one it opens first. It never
creates a bank: a folder without ``bank.sqlite`` is refused with one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from malle.bank import Bank, MatchResult
from malle.bank.store import DB_NAME
from malle.dashboard.frame import ENV_ALLOWED_ROOTS
from malle.errors import ConfigError
from malle.report.palette import short_name
from malle.retrieval.metrics import METRICS, Metric

ENV_BANK = "MALLE_BANK"
ITEMS_PER_PAGE = 24


@dataclass(frozen=True)
class ItemCard:
    """One matched (or browsed) item as the page shows it."""

    item_id: int
    filename: str
    caption: str
    thumbnail: bytes | None
    is_match: bool
    has_thumbnail: bool = True  # False for an item imported from a hash list or embeddings: codes, no image


def default_bank() -> str:
    return os.environ.get(ENV_BANK, "")


def bank_folder(text: str, roots: Sequence[Path]) -> Path:
    """The bank folder typed, resolved, if it lies inside an allowed root and holds a bank."""
    if not text.strip():
        raise ConfigError(f"enter a bank folder (or start the dashboard with ${ENV_BANK} set)")
    folder = Path(text.strip()).expanduser().resolve()
    if not any(folder.is_relative_to(root) for root in roots):
        raise ConfigError(f"{text.strip()} is outside the folders this dashboard may read "
                          f"({', '.join(str(r) for r in roots)}); set {ENV_ALLOWED_ROOTS} (folders separated by "
                          f"'{os.pathsep}') or start it with `-- --allowed-root PATH` to allow more")
    if not (folder / DB_NAME).is_file():
        raise ConfigError(f"{text.strip()} is not a bank (no {DB_NAME}); `malle bank create` makes one")
    return folder


def open_bank(folder: Path) -> Bank:
    return Bank.open(folder, create=False)


def collections_table(bank: Bank) -> pd.DataFrame:
    """One row per collection, narrow enough for any screen: the threshold in its unit ("cosine ≥ 0.236",
    "Hamming ≤ 14/64 bits"); where it came from and when the collection was made are in ``collection_details``."""
    rows = [{"collection": c.name, "method": short_name(c.method), "items": c.count,
             "copy when": verdict_rule(METRICS[c.metric], c.threshold, c.dim), "index": c.index_factory}
            for c in bank.collections()]
    return pd.DataFrame(rows, columns=["collection", "method", "items", "copy when", "index"])


def collection_details(bank: Bank, name: str) -> str:
    """Markdown: the long facts of one collection that would widen its table."""
    coll = bank.collection(name)
    return (f"`{coll.method}` · threshold from: {coll.threshold_source} · created {coll.created}")


def verdict_rule(metric: Metric, threshold: float, dim: int) -> str:
    """When a score means "copy", in the metric's own unit: "cosine similarity ≥ 0.236", "Hamming distance ≤ 14/64"."""
    relation = "≥" if metric.higher_is_better else "≤"
    return f"{metric.score_name} {relation} {metric.format_score(threshold, dim)}"


def verdict(score: float, threshold: float, metric: Metric, dim: int) -> tuple[bool, str]:
    """(copy or not, its words): "copy: Hamming distance 12/64 bits ≤ 14", "no copy: cosine similarity 0.105 < 0.236".
    The one rule the Bank and Search pages judge by."""
    is_copy = bool(score >= threshold) if metric.higher_is_better else bool(score <= threshold)
    relation = ("≥" if is_copy else "<") if metric.higher_is_better else ("≤" if is_copy else ">")
    shown = f"{threshold:.4f}" if not metric.binary else f"{threshold:g}"
    return is_copy, (f"{'copy' if is_copy else 'no copy'}: {metric.score_name} {metric.format_score(score, dim)} "
                     f"{relation} {shown}")


def match_cards(bank: Bank, name: str, data: bytes, k: int) -> tuple[MatchResult, list[ItemCard]]:
    """A query's matches, best first, each with its thumbnail and its verdict against the collection's threshold
    (the bank's own: a low-quality query's matches are no copies)."""
    coll = bank.collection(name)
    result = bank.match_bytes(name, data, k)
    metric = METRICS[coll.metric]
    cards = [ItemCard(m.item.id, m.item.filename, _match_caption(m, result, metric, coll.dim),
                      bank.store.thumbnail(name, m.item.id), m.is_match, m.item.has_thumbnail) for m in result.matches]
    return result, cards


def _match_caption(match, result: MatchResult, metric: Metric, dim: int) -> str:
    is_copy, words = verdict(match.score, result.threshold, metric, dim)
    if is_copy and not match.is_match:  # the bank takes no match of a low-quality query for a copy
        return f"no copy: the query is low quality ({result.quality_reason or 'too little detail'})"
    return words


def item_cards(bank: Bank, name: str, page: int, per_page: int = ITEMS_PER_PAGE) -> list[ItemCard]:
    """Page ``page`` (from 1) of the live items, in the order they were added."""
    items = bank.store.items(name, offset=(page - 1) * per_page, limit=per_page)
    return [ItemCard(i.id, i.filename, f"#{i.id} {i.filename}", bank.store.thumbnail(name, i.id), False,
                     i.has_thumbnail) for i in items]


NO_THUMBNAIL = "no thumbnail: added as a code without its image (a hash list or an embeddings folder)"


def n_pages(count: int, per_page: int = ITEMS_PER_PAGE) -> int:
    return max(1, -(-count // per_page))

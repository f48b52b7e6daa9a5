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
from malle.errors import ConfigError
from malle.retrieval.metrics import METRICS

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


def default_bank() -> str:
    return os.environ.get(ENV_BANK, "")


def bank_folder(text: str, roots: Sequence[Path]) -> Path:
    """The bank folder typed, resolved, if it lies inside an allowed root and holds a bank."""
    if not text.strip():
        raise ConfigError(f"enter a bank folder (or start the dashboard with ${ENV_BANK} set)")
    folder = Path(text.strip()).expanduser().resolve()
    if not any(folder.is_relative_to(root) for root in roots):
        raise ConfigError(f"{text.strip()} is outside the folders this dashboard may read "
                          f"({', '.join(str(r) for r in roots)})")
    if not (folder / DB_NAME).is_file():
        raise ConfigError(f"{text.strip()} is not a bank (no {DB_NAME}); `malle bank create` makes one")
    return folder


def open_bank(folder: Path) -> Bank:
    return Bank.open(folder, create=False)


def collections_table(bank: Bank) -> pd.DataFrame:
    rows = [{"collection": c.name, "method": c.method, "items": c.count, "threshold": c.threshold,
             "unit": METRICS[c.metric].score_name, "threshold from": c.threshold_source, "index": c.index_factory,
             "created": c.created} for c in bank.collections()]
    return pd.DataFrame(rows, columns=["collection", "method", "items", "threshold", "unit", "threshold from",
                                       "index", "created"])


def verdict(score: float, threshold: float, metric_name: str, is_match: bool) -> str:
    """'distance 12 ≤ 31: match' for hashes, 'similarity 0.105 < 0.236: no match' for embeddings."""
    metric = METRICS[metric_name]
    if metric.binary:
        return f"distance {score:g} {'≤' if is_match else '>'} {threshold:g}: {'match' if is_match else 'no match'}"
    return f"similarity {score:.3f} {'≥' if is_match else '<'} {threshold:.3f}: {'match' if is_match else 'no match'}"


def match_cards(bank: Bank, name: str, data: bytes, k: int) -> tuple[MatchResult, list[ItemCard]]:
    """A query's matches, best first, each with its thumbnail and its verdict against the threshold."""
    coll = bank.collection(name)
    result = bank.match_bytes(name, data, k)
    cards = [ItemCard(m.item.id, m.item.filename, verdict(m.score, result.threshold, coll.metric, m.is_match),
                  bank.store.thumbnail(name, m.item.id), m.is_match) for m in result.matches]
    return result, cards


def item_cards(bank: Bank, name: str, page: int, per_page: int = ITEMS_PER_PAGE) -> list[ItemCard]:
    """Page ``page`` (from 1) of the live items, in the order they were added."""
    items = bank.store.items(name, offset=(page - 1) * per_page, limit=per_page)
    return [ItemCard(i.id, i.filename, f"#{i.id} {i.filename}", bank.store.thumbnail(name, i.id), False) for i in items]


def n_pages(count: int, per_page: int = ITEMS_PER_PAGE) -> int:
    return max(1, -(-count // per_page))

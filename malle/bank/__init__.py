"""Banks of reference images: a growing collection per method, matched one query at a time.

A bank is a folder: ``bank.sqlite`` (SQLite in WAL mode, the source of truth: collections, items with the
SHA-256 of their bytes, filename, metadata and code) and ``indexes/`` (one FAISS index per collection, a
cache rebuilt from the database whenever it is missing, stale or damaged). See ``malle.bank.bank.Bank`` for
the API, ``malle.bank.store`` for durability and concurrency, ``malle.bank.snapshots`` for the index swap,
and ``malle.bank.thresholds`` for where thresholds come from.

    from malle.bank import Bank
    bank = Bank.open("refs")
    bank.create_collection("photos", "sscd_distilled")
    item, created = bank.add_bytes("photos", open("a.jpg", "rb").read(), "a.jpg")
    result = bank.match_bytes("photos", open("query.jpg", "rb").read(), k=5)
    for m in result.matches:
        print(m.item.filename, m.score, m.is_match)
"""

from malle.bank.bank import AddReport, Bank, Match, MatchResult, is_close_enough, sha256_of
from malle.bank.store import BankError, Collection, Conflict, Item, NewItem, NotFound

__all__ = ["AddReport", "Bank", "BankError", "Collection", "Conflict", "Item", "Match", "MatchResult", "NewItem",
           "NotFound", "is_close_enough", "sha256_of"]

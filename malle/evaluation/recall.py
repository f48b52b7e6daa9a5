"""Class- and instance-level Recall@K, as the reference experiment defines them (the ``search`` stage writes
the per-query table; ``malle.lab.results.Results`` derives the tables from it).

* instance level: a query hits at K when its exact source original is in its top K;
* class level: a query hits at K when any original of its class is in its top K.

Everything is derived from one per-query table holding the 1-based rank of the
true original (``rank``) and of the first same-class original (``class_rank``);
a hit at K is simply ``rank <= K``. A rank beyond the search depth is missing (NA).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from malle.retrieval.topk import Hits

KS = (1, 3, 5, 10, 11)
LEVELS = {"instance": "rank", "class": "class_rank"}


def first_match(matches: np.ndarray) -> pd.arrays.IntegerArray:
    """1-based position of the first True per row, NA where there is none."""
    pos = pd.array(matches.argmax(axis=1) + 1, dtype="Int64")
    pos[~matches.any(axis=1)] = pd.NA
    return pos


def per_query_table(
    method: str, database: pd.DataFrame, queries: pd.DataFrame, hits: Hits, true_scores: np.ndarray
) -> pd.DataFrame:
    """One row per query: where its true original and its class rank, and the scores around them.

    ``database`` is in id order (columns ``file``, ``class``): the originals, then any extra
    references; ``queries`` has ``file``, ``source``, ``class``, ``chain_length``, ``ops``. An approximate
    index may return fewer than K items, padded with id -1, which match nothing.
    """
    db_id = pd.Series(np.arange(len(database)), index=database["file"])
    source_id = db_id.loc[queries["source"]].to_numpy()
    found = hits.ids >= 0
    ids = np.where(found, hits.ids, 0)
    db_class = database["class"].to_numpy()
    is_source = hits.ids == source_id[:, None]
    same_class = found & (db_class[ids] == queries["class"].to_numpy()[:, None])
    wrong_scores = np.where(is_source, np.nan, hits.scores.astype(np.float64))
    first_wrong = np.argmax(~is_source, axis=1)
    return pd.DataFrame(
        {
            "method": method,
            "query": queries["file"].to_numpy(),
            "source": queries["source"].to_numpy(),
            "class": queries["class"].to_numpy(),
            "chain_length": queries["chain_length"].to_numpy(),
            "ops": queries["ops"].to_numpy(),
            "rank": first_match(is_source),
            "class_rank": first_match(same_class),
            "true_score": _true_scores(hits, is_source, true_scores),
            "best_wrong_score": np.take_along_axis(wrong_scores, first_wrong[:, None], 1)[:, 0],
            "top1": np.where(found[:, 0], database["file"].to_numpy()[ids[:, 0]], ""),
            "top1_score": hits.scores[:, 0].astype(np.float64),
            "top1_tied": hits.top1_tied,
        }
    )


def _true_scores(hits: Hits, is_source: np.ndarray, computed: np.ndarray) -> np.ndarray:
    """The true original's score as the search saw it when retrieved, else as computed.

    Taking it from the same FAISS result keeps float scores comparable bit for bit with the others.
    """
    found = is_source.any(axis=1)
    retrieved = np.take_along_axis(hits.scores, is_source.argmax(axis=1)[:, None], axis=1)[:, 0]
    return np.where(found, retrieved, computed).astype(np.float64)


def hit_at_k(per_query: pd.DataFrame, k: int, level: str = "instance") -> pd.Series:
    """Per query: is the true original (instance) or a same-class original (class) in the top K?

    A rank beyond the search depth is missing and counts as a miss.
    """
    return (per_query[LEVELS[level]].astype("Float64").fillna(np.inf) <= k).astype(bool)


def recall_at_k(per_query: pd.DataFrame, ks: Sequence[int] = KS, by: Sequence[str] = ()) -> pd.DataFrame:
    """Recall@K per method (and per ``by`` columns) at both levels.

    Columns: ``*by, method, level, k, recall, n`` where ``n`` counts the queries.
    """
    keys = ["method", *by]
    rows = []
    for level in LEVELS:
        for k in ks:
            hit = hit_at_k(per_query, k, level).astype(float).rename("hit")
            grouped = pd.concat([per_query[keys], hit], axis=1).groupby(keys, sort=False)["hit"]
            table = grouped.agg(["mean", "size"]).reset_index()
            table = table.rename(columns={"mean": "recall", "size": "n"})
            table.insert(len(keys), "level", level)
            table.insert(len(keys) + 1, "k", k)
            rows.append(table)
    columns = [*by, "method", "level", "k", "recall", "n"]
    return pd.concat(rows, ignore_index=True)[columns]


def explode_ops(per_query: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, op in its chain); ``ops`` is the ``|``-joined chain."""
    return per_query.assign(op=per_query["ops"].str.split("|")).explode("op", ignore_index=True)


def per_op_recall(per_query: pd.DataFrame, ks: Sequence[int] = KS) -> pd.DataFrame:
    """Recall@K over the queries whose chain contains each op."""
    return recall_at_k(explode_ops(per_query), ks, by=["op"])


def recall_by_chain_length(per_query: pd.DataFrame, ks: Sequence[int] = KS) -> pd.DataFrame:
    return recall_at_k(per_query, ks, by=["chain_length"])


def filter_by_ops(per_query: pd.DataFrame, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Queries whose chain contains every op in ``include`` and none in ``exclude``."""
    chains = per_query["ops"].str.split("|").map(set)
    keep = chains.map(lambda ops: set(include) <= ops and not (set(exclude) & ops))
    return per_query[keep.to_numpy(dtype=bool)]


def tie_rates(per_query: pd.DataFrame) -> pd.Series:
    """Share of queries whose top-1 score is shared by another original, per method."""
    return per_query.groupby("method", sort=False)["top1_tied"].mean()


def recall1_tie_bounds(per_query: pd.DataFrame) -> pd.DataFrame:
    """Instance Recall@1 if every top-1 tie were won, and if every one were lost, per method.

    Won: the true original shares the best score. Lost: it is top-1 and shares it with nobody.
    The reported Recall@1 (ties broken by database id) lies between the two.
    """
    won = per_query["true_score"] == per_query["top1_score"]
    lost = (per_query["rank"] == 1).fillna(False).astype(bool) & ~per_query["top1_tied"].astype(bool)
    table = pd.DataFrame({"method": per_query["method"], "r1_ties_won": won, "r1_ties_lost": lost})
    return table.groupby("method", sort=False).mean()


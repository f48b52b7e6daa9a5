"""Stage ``search``: every copy searched in one method's database, and its per-query evaluation.

The database is the originals, then the extra references (stage ``references``) when the run has
them, in the configured FAISS index. Folder: ``index.faiss  per_query.parquet  neighbour_ids.npy
neighbour_scores.npy`` (the top ``NEIGHBOURS_KEPT`` database ids and scores per copy, for the dashboard).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from malle.descriptors import Descriptor
from malle.evaluation import recall
from malle.io import cache
from malle.io.tables import row_ids
from malle.lab.stages.base import Ctx, Node, Stage
from malle.lab.stages.outputs import IndexMeta, SearchOutputs
from malle.retrieval import indexes
from malle.retrieval.topk import best_pair_scores, save_index, search

EXACT_CHECK_K = 10  # an approximate index reports R@10 against exact search (and the top-10 overlap)
NEIGHBOURS_KEPT = 20  # top-N neighbours stored per query for the dashboard


def nearest_within_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """R@k as FAISS's benchmarks define it (1-recall@k): exact search's nearest neighbour is in the top ``k``."""
    if not len(exact):
        return float("nan")
    return float((found[:, :k] == exact[:, :1]).any(axis=1).mean())


def overlap_at_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of exact search's top ``k`` that an approximate search also returned in its top ``k``."""
    k = min(k, exact.shape[1], found.shape[1])
    if not len(exact) or not k:
        return float("nan")
    shared = [len(np.intersect1d(f[:k][f[:k] >= 0], e[:k])) for f, e in zip(found, exact)]
    return float(np.mean(shared) / k)


def build_search_index(config, desc: Descriptor, db: np.ndarray, path: Path):
    """The configured index over the database, saved to ``path``, and what to record about it."""
    choice = indexes.choose(config.index, len(db), desc.dim, desc.metric, config.index_params)
    start = time.perf_counter()
    index = indexes.new_index(choice, desc.metric, desc.dim)
    indexes.train_and_add(index, np.ascontiguousarray(db), desc.metric)
    seconds = time.perf_counter() - start
    save_index(index, path, desc.metric)
    return index, IndexMeta(index=choice.describe(), index_reason=choice.reason, index_exact=choice.exact,
                            index_seconds=seconds, index_bytes=path.stat().st_size, database_size=len(db))


class Search(Stage):
    kind = "search"
    version = 4
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        embed = Node("embed", (ctx.method,))
        return (embed, Node("references", (ctx.method,))) if ctx.run.has_references else (embed,)

    def key_parts(self, ctx: Ctx) -> tuple:
        cfg = ctx.run.config
        return cfg.depth, cfg.index, cfg.index_params

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc, method = ctx.run, ctx.desc, ctx.method
        metric = desc.metric
        queries, db = run.codes(method)[1], run.database_codes(method)
        index, index_meta = build_search_index(run.config, desc, db, SearchOutputs(tmp).index)
        start = time.perf_counter()
        hits = search(index, queries, run.config.depth, metric)
        seconds = time.perf_counter() - start
        if not index_meta.index_exact:
            exact = search(metric.build_index(db), queries, EXACT_CHECK_K, metric)
            index_meta = replace(index_meta, r10_vs_exact=nearest_within_k(hits.ids, exact.ids, EXACT_CHECK_K),
                                 overlap10_vs_exact=overlap_at_k(hits.ids, exact.ids, EXACT_CHECK_K))
        sources = row_ids(run.originals["file"], run.manifest["source"])
        true_scores = best_pair_scores(metric, queries, db[sources])
        table = recall.per_query_table(method, run.database(method), run.manifest, hits, true_scores)
        out = SearchOutputs(tmp)
        cache.write_table(out.per_query, table)
        cache.write_npy(out.neighbour_ids, hits.ids[:, :NEIGHBOURS_KEPT])
        cache.write_npy(out.neighbour_scores, hits.scores[:, :NEIGHBOURS_KEPT])
        meta.update(method=method, items=len(queries), search_seconds=seconds,
                    ms_per_query=1000 * seconds / max(len(queries), 1), tie_rate=float(hits.top1_tied.mean()),
                    **index_meta.as_meta())


STAGE = Search()

"""Stage ``openset``: copies and distractor queries alike, each with its top-k database matches.

Scores them as DISC21 does (micro average precision over every query's top ``PREDICTIONS_PER_QUERY``,
``malle.evaluation.micro_ap``). Folder: ``predictions.parquet  pr_curve.parquet  distractors.npy``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from malle.evaluation import micro_ap
from malle.io import cache
from malle.lab.stages.base import Ctx, Node, Stage
from malle.lab.stages.outputs import OpenSetOutputs
from malle.retrieval.metrics import Metric
from malle.retrieval.topk import search

PREDICTIONS_PER_QUERY = 10  # the top-k database matches kept per query, as in DISC21


def prediction_rows(method: str, queries: pd.Series, sources: pd.Series, ids: np.ndarray, scores: np.ndarray,
                    references: pd.Series, metric: Metric, k: int = PREDICTIONS_PER_QUERY) -> pd.DataFrame:
    """``method, query, reference, rank, score, is_match`` for each query's top ``k``; the score is a
    similarity (a Hamming distance negated), as µAP expects."""
    ids, scores = ids[:, :k], scores[:, :k]
    n, width = ids.shape
    found = ids.ravel() >= 0  # an approximate index may return fewer than k
    reference = references.to_numpy()[ids.ravel()[found]]
    return pd.DataFrame({
        "method": method,
        "query": np.repeat(queries.to_numpy(), width)[found],
        "reference": reference,
        "rank": np.tile(np.arange(1, width + 1), n)[found],
        "score": metric.similarity(scores).ravel().astype(np.float64)[found],
        "is_match": reference == np.repeat(sources.to_numpy(), width)[found],
    })


class OpenSet(Stage):
    kind = "openset"
    version = 1
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return Node("search", (ctx.method,)), Node("distractors")

    def key_parts(self, ctx: Ctx) -> tuple:
        return (PREDICTIONS_PER_QUERY,)

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, desc, method = ctx.run, ctx.desc, ctx.method
        distractors = run.distractor_manifest
        codes = desc.encode_files([run.distractors_dir / f for f in distractors["file"]],
                                  progress=ctx.progress, desc=f"{desc.label}: distractor queries", queries=True)
        cache.write_npy(OpenSetOutputs(tmp).distractor_codes, codes)
        found = search(run.search_index(method), codes, PREDICTIONS_PER_QUERY, desc.metric)
        copy_ids, copy_scores = run.neighbours(method)
        references = run.database(method)["file"]
        table = pd.concat([
            prediction_rows(method, run.manifest["file"], run.manifest["source"], copy_ids, copy_scores,
                            references, desc.metric),
            prediction_rows(method, distractors["file"], distractors["source"], found.ids, found.scores,
                            references, desc.metric),
        ], ignore_index=True)
        scores, curve = micro_ap.score(table, n_positives=len(run.manifest))
        cache.write_table(OpenSetOutputs(tmp).predictions, table)
        cache.write_table(OpenSetOutputs(tmp).pr_curve, curve.assign(method=method))
        meta.update(method=method, items=len(codes), **asdict(scores))


STAGE = OpenSet()

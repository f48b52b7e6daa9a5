"""Derived methods' stages: ``search``, ``openset`` and ``attribution`` of ``METHOD+trick`` (``malle.tricks``).

A derived method reuses its base method's ``embed`` and ``references`` (its descriptor is the base's, so their
keys are the base's and the cache holds them once). Its ``search`` and ``openset`` stages write the same files
as a base method's, built by its last trick (``malle.lab.stages.trick_layers``) from its parent's outputs, so Recall@K,
per-op tables, open-set scores, costs and the dashboard read it like any method:

    search[sscd]  -> search[sscd+regions]  -> search[sscd+regions+norm]
    openset[sscd] -> openset[sscd+regions] -> openset[sscd+regions+norm]

``ByMethod`` is the stage registered under each of those kinds: a base method gets the plain stage, a
derived one the stage here. The key of a derived stage carries the trick's constants on top of the plain
stage's version. Attribution (which op broke a miss) re-encodes each miss with ops removed; it is not
computed for derived methods, which write an empty table and say so in their meta. Severity sweeps
(``sweepscore``) refuse a derived method in one line.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from malle.errors import ConfigError
from malle.evaluation import micro_ap, recall
from malle.evaluation.leave_one_out import summarise
from malle.io import cache
from malle.lab.stages.attribution import Attribution
from malle.lab.stages.base import Built, Ctx, Node, Stage
from malle.lab.stages.openset import PREDICTIONS_PER_QUERY, prediction_rows
from malle.lab.stages.outputs import AttributionOutputs, IndexMeta, OpenSetOutputs, SearchOutputs
from malle.lab.stages.search import NEIGHBOURS_KEPT
from malle.lab.stages.trick_layers import LAYERS, Candidates, CopyHits
from malle.retrieval.topk import Hits, search
from malle.tricks.methods import MethodName, parse


def method_of(ctx: Ctx) -> MethodName:
    return parse(ctx.method)


def trick_needs(method: MethodName) -> tuple[Node, ...]:
    return tuple(Node(kind, args) for kind, args in LAYERS[method.last].needs(method))


class DerivedSearch(Stage):
    kind = "search"
    version = 1
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        method = method_of(ctx)
        return (Node("search", (method.parent.name,)), *trick_needs(method))

    def key_parts(self, ctx: Ctx) -> tuple:
        cfg = ctx.run.config
        return method_of(ctx).last.suffix, LAYERS[method_of(ctx).last].key(ctx), cfg.depth

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, method = ctx.run, method_of(ctx)
        parent_built = ctx.input("search", method.parent.name)
        parent_table = cache.read_table(SearchOutputs(parent_built.folder).per_query)
        ids, scores = run.neighbours(method.parent.name)
        parent = CopyHits(ids, scores, parent_table["true_score"].to_numpy(np.float64), complete=False)
        start = time.perf_counter()
        found = LAYERS[method.last].copies(ctx, method, parent)
        seconds = time.perf_counter() - start
        metric = run.descriptor(method.base).metric
        hits = Hits(found.ids, found.scores.astype(np.float32), metric)
        table = recall.per_query_table(method.name, run.database(method.base), run.manifest, hits,
                                         found.true_scores)
        if not found.complete:  # the list is the parent's top; a true original below it keeps the parent's rank
            for column in ("rank", "class_rank"):
                table[column] = table[column].fillna(parent_table[column])
        out = SearchOutputs(tmp)
        cache.write_table(out.per_query, table)
        cache.write_npy(out.neighbour_ids, hits.ids[:, :NEIGHBOURS_KEPT])
        cache.write_npy(out.neighbour_scores, hits.scores[:, :NEIGHBOURS_KEPT])
        trick_ms = 1000 * seconds / max(len(table), 1)
        meta.update(IndexMeta.from_meta(parent_built.meta).as_meta())  # a derived search searches its parent's index
        meta.update(method=method.name, base=method.base, trick=method.last.suffix, items=len(table),
                    search_seconds=seconds, trick_ms_per_query=trick_ms,
                    tricks_ms_per_query=parent_built.meta.get("tricks_ms_per_query", 0.0) + trick_ms,
                    ms_per_query=parent_built.meta["ms_per_query"] + trick_ms, tie_rate=float(hits.top1_tied.mean()))


class DerivedOpenSet(Stage):
    kind = "openset"
    version = 1
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        method = method_of(ctx)
        return (Node("search", (method.name,)), Node("openset", (method.parent.name,)), Node("distractors"),
                *trick_needs(method))

    def key_parts(self, ctx: Ctx) -> tuple:
        return method_of(ctx).last.suffix, LAYERS[method_of(ctx).last].key(ctx), PREDICTIONS_PER_QUERY

    def parent_distractors(self, ctx: Ctx, parent: MethodName) -> Candidates:
        """The parent's distractor candidates: searched again for a base method (its codes are cached), stored
        by a derived one."""
        stored = OpenSetOutputs(ctx.input("openset", parent.name).folder)
        if parent.is_derived:
            return Candidates(cache.read_npy(stored.distractor_ids), cache.read_npy(stored.distractor_scores))
        desc = ctx.run.descriptor(parent.base)
        found = search(ctx.run.search_index(parent.base), cache.read_npy(stored.distractor_codes),
                       PREDICTIONS_PER_QUERY, desc.metric)
        return Candidates(found.ids, found.scores)

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        run, method = ctx.run, method_of(ctx)
        metric = run.descriptor(method.base).metric
        parent = self.parent_distractors(ctx, method.parent)
        start = time.perf_counter()
        found = LAYERS[method.last].distractors(ctx, method, parent)
        seconds = time.perf_counter() - start
        distractors = run.distractor_manifest
        copy_ids, copy_scores = run.neighbours(method.name)
        references = run.database(method.base)["file"]
        table = pd.concat([
            prediction_rows(method.name, run.manifest["file"], run.manifest["source"], copy_ids, copy_scores,
                            references, metric),
            prediction_rows(method.name, distractors["file"], distractors["source"], found.ids, found.scores,
                            references, metric),
        ], ignore_index=True)
        scores, curve = micro_ap.score(table, n_positives=len(run.manifest))
        out = OpenSetOutputs(tmp)
        cache.write_table(out.predictions, table)
        cache.write_table(out.pr_curve, curve.assign(method=method.name))
        cache.write_npy(out.distractor_ids, found.ids)
        cache.write_npy(out.distractor_scores, np.asarray(found.scores, np.float64))
        meta.update(method=method.name, items=len(found.ids), trick_seconds=seconds,
                    trick_ms_per_query=1000 * seconds / max(len(found.ids), 1), **asdict(scores))


class DerivedAttribution(Attribution):
    """Attribution's kind, inputs and key, with an empty table: a derived method is not replayed."""

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        charges = pd.DataFrame({"query": pd.Series(dtype=str), "ops": pd.Series(dtype=str),
                                "charged": pd.Series(dtype=str)})
        out = AttributionOutputs(tmp)
        cache.write_table(out.per_query, charges)
        cache.write_table(out.summary, summarise(ctx.method, charges))
        meta.update(method=ctx.method, items=0, computed=False,
                    reason="attribution re-encodes each miss with ops removed; not computed for derived methods")


class NotForTricks(Stage):
    """A per-method stage that has no derived form: asking for it with a derived method is a one-line error
    (rather than the base method's result under the derived name)."""

    def __init__(self, kind: str, what: str):
        self.kind, self.version, self.params, self.what = kind, 1, ("method",), what

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        raise ConfigError(f"{ctx.method}: matching tricks are not measured in {self.what}; "
                          f"use its base method {method_of(ctx).base}")


class ByMethod(Stage):
    """One stage kind for base and derived methods: the plain stage for a base method, else the derived one."""

    def __init__(self, plain: Stage, derived: Stage):
        self.plain, self.derived = plain, derived
        self.kind, self.version, self.params = plain.kind, plain.version, plain.params

    def pick(self, ctx: Ctx) -> Stage:
        return self.derived if method_of(ctx).is_derived else self.plain

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return self.pick(ctx).needs(ctx)

    def key_parts(self, ctx: Ctx) -> tuple:
        stage = self.pick(ctx)
        return stage.key_parts(ctx) if stage is self.plain else ("derived", stage.version, *stage.key_parts(ctx))

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        self.pick(ctx).build(ctx, tmp, meta)

    def notice(self, ctx: Ctx, built: Built) -> str | None:
        return self.pick(ctx).notice(ctx, built)


SEARCH, OPENSET, ATTRIBUTION = DerivedSearch(), DerivedOpenSet(), DerivedAttribution()
SWEEPSCORE = NotForTricks("sweepscore", "severity sweeps")

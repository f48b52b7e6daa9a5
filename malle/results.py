"""``Results``: everything the CLI and the dashboard show, derived from the stages' cached tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from . import cache, evaluate
from .descriptors import Unavailable

if TYPE_CHECKING:
    from .experiment import Experiment


class Results:
    """One finished run: the per-query table of every method, and the tables derived from its stages."""

    def __init__(self, experiment: Experiment, per_query: pd.DataFrame):
        self.experiment = experiment
        self.config = experiment.config
        self.methods = list(experiment.methods)
        self.per_query = per_query

    @property
    def unavailable(self) -> list[Unavailable]:
        return self.experiment.unavailable

    @property
    def labels(self) -> dict[str, str]:
        return {m: self.experiment.stage("embed", m).meta["label"] for m in self.methods}

    def recall(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.recall_at_k(self.per_query, ks or self.config.ks).drop(columns="n")

    def per_op(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.per_op_recall(self.per_query, ks or self.config.ks)

    def by_chain_length(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.recall_by_chain_length(self.per_query, ks or self.config.ks)

    @property
    def has_openset(self) -> bool:
        return bool(self.experiment.distractor_target)

    def _stage_tables(self, kind: str, file: str, methods: Sequence[str] | None = None) -> pd.DataFrame:
        return pd.concat([cache.read_table(self.experiment.stage(kind, m).folder / file)
                          for m in methods or self.methods], ignore_index=True)

    def openset(self) -> pd.DataFrame:
        """Per method: µAP, recall at precision 0.9 and its threshold, queries and ground-truth pairs."""
        columns = ["method", "uap", "recall_at_p90", "threshold_at_p90", "n_queries", "n_positives"]
        if not self.has_openset:
            return pd.DataFrame(columns=columns)
        return pd.DataFrame([{c: self.experiment.stage("openset", m).meta[c] if c != "method" else m
                              for c in columns} for m in self.methods])

    def predictions(self, methods: Sequence[str] | None = None) -> pd.DataFrame:
        """Every query's top-k database matches, for ``methods`` (default: all of them)."""
        if not self.has_openset:
            return pd.DataFrame(columns=["method", "query", "reference", "rank", "score", "is_match"])
        return self._stage_tables("openset", "predictions.parquet", methods)

    def pr_curves(self) -> pd.DataFrame:
        if not self.has_openset:
            return pd.DataFrame(columns=["threshold", "precision", "recall", "method"])
        return self._stage_tables("openset", "pr_curve.parquet")

    def attribution(self) -> pd.DataFrame:
        """Per method and op: the misses charged to it (shared when several ops restore the hit) and its share."""
        return self._stage_tables("attribution", "summary.parquet")

    def charged(self, method: str) -> pd.DataFrame:
        """Per missed query of ``method`` with two or more ops: the op(s) charged with the miss."""
        return cache.read_table(self.experiment.stage("attribution", method).folder / "per_query.parquet")

    def methods_table(self) -> pd.DataFrame:
        """What each method is: label, family, precision, weights and their licence."""
        return pd.DataFrame([self.experiment.descriptor(m).provenance() for m in self.methods])

    def costs(self) -> pd.DataFrame:
        """Per method: encode throughput, search cost, top-1 tie rate and the Recall@1 range ties allow."""
        bounds = evaluate.recall1_tie_bounds(self.per_query)
        rows = []
        for m in self.methods:
            embed, found = self.experiment.stage("embed", m).meta, self.experiment.stage("search", m).meta
            rows.append({"method": m, "label": embed["label"], "family": embed["family"], "dim": embed["dim"],
                         "metric": embed["metric"], "precision": embed["precision"],
                         # Stages cached before these were recorded say so rather than guess.
                         "runtime": embed.get("runtime", "not recorded"), "cpu": embed.get("cpu", "not recorded"),
                         "images_per_s": embed["images_per_s"], "ms_per_query": found["ms_per_query"],
                         "index": found["index"], "database_size": found["database_size"],
                         "index_bytes": found["index_bytes"], "r10_vs_exact": found["r10_vs_exact"],
                         "overlap10_vs_exact": found["overlap10_vs_exact"],
                         "top1_tie_rate": found["tie_rate"], **bounds.loc[m].to_dict(),
                         "low_quality_share": embed.get("low_quality_share", float("nan"))})
        return pd.DataFrame(rows)

    def timings(self) -> pd.DataFrame:
        """Seconds per stage as first computed, and whether this run took it from the cache."""
        exp = self.experiment
        built = [exp.engine.obtain(exp, node) for node in exp.run_nodes(open_set=self.has_openset)]
        return pd.DataFrame([{"stage": b.node.kind, "method": b.node.args[0] if b.node.args else "",
                              "seconds": b.meta["seconds"], "items": b.meta["items"], "cached": b.cached}
                             for b in built])

    def write(self, out: Path) -> list[Path]:
        """The CLI's output files."""
        out = Path(out)
        exp = self.experiment
        tables = {
            "recall.csv": self.recall(),
            "per_op.csv": self.per_op(),
            "by_chain_length.csv": self.by_chain_length(),
            "per_query.csv": self.per_query,
            "skipped.csv": exp.skipped,
            "manifest.csv": exp.manifest,
            "originals.csv": exp.originals,
            "costs.csv": self.costs(),
            "attribution.csv": self.attribution(),
            "methods.csv": self.methods_table(),
            "timings.csv": self.timings(),
        }
        if self.has_openset:
            tables["manifest.csv"] = pd.concat([exp.manifest, exp.distractor_manifest], ignore_index=True)
            tables["skipped.csv"] = pd.concat([exp.skipped, cache.read_table(exp.stage("distractors").folder
                                                                             / "skipped.csv")],
                                              ignore_index=True).astype(str)
            tables.update({"openset.csv": self.openset(), "predictions.parquet": self.predictions(),
                           "pr_curve.parquet": self.pr_curves()})
        for name, table in tables.items():
            cache.write_table(out / name, table)
        cache.write_json(out / "config.json", {**self.config.as_dict(), "methods": self.methods,
                                               "data": str(exp.data_root),
                                               "chain_lengths": self.config.augment.describe(),
                                               "unavailable": [u.__dict__ for u in self.unavailable]})
        return [out / name for name in [*tables, "config.json"]]

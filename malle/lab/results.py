"""``Results``: everything the CLI and the dashboard show, derived from the stages' cached tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from malle.descriptors import Unavailable
from malle.evaluation import recall as evaluate
from malle.io import cache
from malle.lab.stages.outputs import (
    OUTPUTS,
    AttributionOutputs,
    CalibrationOutputs,
    EmbedCost,
    File,
    IndexMeta,
    OpenSetOutputs,
    SearchOutputs,
    low_quality_share,
)
from malle.ops.presets import preset_of
from malle.tricks.methods import NORM, parse

if TYPE_CHECKING:
    from malle.lab.experiment import Experiment


# A CSV is read by people: its floats keep the digits that mean something. Scores (float32 cosines carry about 7
# significant digits), recalls, shares and thresholds keep 6 decimals; timings keep what their clock resolves.
# Parquet files keep every bit.
CSV_DECIMALS = 6
TIMING_DECIMALS = {"seconds": 3, "images_per_s": 1, "ms_per_query": 3, "tricks_ms_per_query": 3}


def rounded(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as a CSV output shows it: every float column rounded (``CSV_DECIMALS``, ``TIMING_DECIMALS``)."""
    floats = table.select_dtypes("floating").columns
    return table.astype({c: "float64" for c in floats}).round(
        {c: TIMING_DECIMALS.get(c, CSV_DECIMALS) for c in floats})


def configuration(experiment: Experiment) -> dict:
    """What a run's results depend on, as config.json records it: the config, the methods that ran and the
    dataset's folder."""
    return {**experiment.config.as_dict(), "methods": list(experiment.methods), "data": str(experiment.data_root)}


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
        """Each method's full label; a derived method's names its tricks (``malle.tricks.methods``)."""
        return {m: parse(m).label(self.experiment.stage("embed", m).meta["label"]) for m in self.methods}

    @property
    def has_tricks(self) -> bool:
        return any(parse(m).is_derived for m in self.methods)

    def recall(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.recall_at_k(self.per_query, ks or self.config.ks).drop(columns="n")

    def per_op(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.per_op_recall(self.per_query, ks or self.config.ks)

    def by_chain_length(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.recall_by_chain_length(self.per_query, ks or self.config.ks)

    @property
    def has_openset(self) -> bool:
        return bool(self.experiment.distractor_target)

    def _stage_tables(self, file: File, methods: Sequence[str] | None = None) -> pd.DataFrame:
        """One table per method from the stage that declares ``file`` (an attribute of its outputs class)."""
        kind = next(cls.kind for cls in OUTPUTS.values() if file in vars(cls).values())
        return pd.concat([cache.read_table(self.experiment.stage(kind, m).folder / file.name)
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
        return self._stage_tables(OpenSetOutputs.predictions, methods)

    def pr_curves(self) -> pd.DataFrame:
        if not self.has_openset:
            return pd.DataFrame(columns=["threshold", "precision", "recall", "method"])
        return self._stage_tables(OpenSetOutputs.pr_curve)

    def calibration(self) -> dict[str, dict]:
        """Per method: its score -> P(true copy) map, ece and reliability on held-back queries
        (``malle.lab.stages.calibrate``); empty without an open set."""
        if not self.has_openset:
            return {}
        return {m: cache.read_json(CalibrationOutputs(self.experiment.stage("calibrate", m).folder).calibration)
                for m in self.methods}

    def calibration_record(self) -> dict:
        """calibration.json: each method's calibration, with the preset and the key of the run's configuration."""
        exp = self.experiment
        return {"preset": preset_of(exp.config.augment).name,
                "config_key": cache.fingerprint(json.loads(json.dumps(configuration(exp), default=str))),
                "methods": self.calibration()}

    def attribution(self) -> pd.DataFrame:
        """Per method and op: the misses charged to it (shared when several ops restore the hit) and its share."""
        return self._stage_tables(AttributionOutputs.summary)

    def charged(self, method: str) -> pd.DataFrame:
        """Per missed query of ``method`` with two or more ops: the op(s) charged with the miss."""
        return cache.read_table(AttributionOutputs(self.experiment.stage("attribution", method).folder).per_query)

    def methods_table(self) -> pd.DataFrame:
        """What each method is: label, family, precision, weights and their licence."""
        return pd.DataFrame([self.experiment.descriptor(m).provenance() for m in self.methods])

    def costs(self) -> pd.DataFrame:
        """Per method: encode throughput, search cost, top-1 tie rate and the Recall@1 range ties allow."""
        bounds = evaluate.recall1_tie_bounds(self.per_query)
        rows = []
        for m in self.methods:
            embed, found = self.experiment.stage("embed", m).meta, self.experiment.stage("search", m).meta
            cost, index = EmbedCost.from_meta(embed), IndexMeta.from_meta(found)
            rows.append({"method": m, "label": cost.label, "family": cost.family, "dim": cost.dim,
                         "metric": cost.metric, "precision": cost.precision, "runtime": cost.runtime,
                         "cpu": cost.cpu, "images_per_s": cost.images_per_s, "ms_per_query": found["ms_per_query"],
                         "index": index.index, "database_size": index.database_size,
                         "index_bytes": index.index_bytes, "r10_vs_exact": index.r10_vs_exact,
                         "overlap10_vs_exact": index.overlap10_vs_exact,
                         "top1_tie_rate": found["tie_rate"], **bounds.loc[m].to_dict(),
                         "low_quality_share": low_quality_share(embed),
                         **(self._trick_costs(m, found) if self.has_tricks else {})})
        return pd.DataFrame(rows)

    def _trick_costs(self, method: str, found: dict) -> dict:
        """A derived method's base and what its tricks cost per copy on top of the base's search (runs with a
        derived method only, so other runs' costs.csv keep their columns)."""
        return {"base": parse(method).base, "tricks": parse(method).short(),
                "tricks_ms_per_query": found.get("tricks_ms_per_query", 0.0)}

    def trick_gains(self) -> pd.DataFrame:
        """Per derived method: its base; µAP, recall at precision 0.9 and instance Recall@1 with and without its
        tricks, the gains; and what the tricks cost per copy on top of the base's search."""
        rows = []
        for m in [m for m in self.methods if parse(m).is_derived]:
            base = parse(m).base
            row: dict[str, Any] = {"method": m, "base": base, "tricks": parse(m).short()}
            for name, method in (("", m), ("base_", base)):
                table = cache.read_table(SearchOutputs(self.experiment.stage("search", method).folder).per_query)
                row[f"{name}recall_at_1"] = float((table["rank"].astype("Float64") == 1).fillna(False).mean())
                if self.has_openset:
                    meta = self.experiment.stage("openset", method).meta
                    row[f"{name}uap"], row[f"{name}recall_at_p90"] = meta["uap"], meta["recall_at_p90"]
            row["recall_at_1_gain"] = row["recall_at_1"] - row["base_recall_at_1"]
            if self.has_openset:
                row["uap_gain"] = row["uap"] - row["base_uap"]
                row["recall_at_p90_gain"] = row["recall_at_p90"] - row["base_recall_at_p90"]
            row["tricks_ms_per_query"] = self.experiment.stage("search", m).meta["tricks_ms_per_query"]
            rows.append(row)
        return pd.DataFrame(rows)

    def score_normalisation(self) -> dict | None:
        """What ``METHOD+norm`` subtracted and against which background set, for config.json; None without it."""
        bases = [parse(m).base for m in self.methods if parse(m).uses(NORM)]
        if not bases:
            return None
        background = self.experiment.stage("background", bases[0]).meta
        norm = self.experiment.normalisation
        return {"beta": norm.beta, "ranks": [norm.first, norm.last], "sscd_syntax": norm.spec(),
                "definition": norm.describe(),
                "background": {"size": background["items"], "source": background["source"],
                               "fingerprint": background["fingerprint"], "skipped": background["skipped"]}}

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
        if self.has_tricks:
            tables["tricks.csv"] = self.trick_gains()
        for name, table in tables.items():
            cache.write_table(out / name, rounded(table) if name.endswith(".csv") else table)
        records = {"config.json": self.config_record(),
                   **({"calibration.json": self.calibration_record()} if self.has_openset else {})}
        for name, record in records.items():
            cache.write_json(out / name, record)
        return [out / name for name in [*tables, *records]]

    def config_record(self) -> dict:
        """config.json: the config, the methods that ran, and for ``METHOD+norm`` its setting and background set
        (a run without one records what it did before that option existed)."""
        exp = self.experiment
        record = {**configuration(exp), "chain_lengths": self.config.augment.describe(),
                  "unavailable": [u.__dict__ for u in self.unavailable]}
        normalisation = self.score_normalisation()
        if normalisation is None:
            if record.get("background") is None:
                record.pop("background", None)
        else:
            record["score_normalisation"] = normalisation
        return record

"""The hard preset on real ImageNet photos: every method with and without each matching trick.

    python bench/hard_preset.py [--data ../shared/datasets/imagenet-200x5/val] [--n 200] [--distractors 500]
                                [--methods sscd_distilled,sscd_distilled+regions,...] [--cache DIR]
                                [--precision auto|fp32|bf16|int8]

Runs issue 16's setting (``--preset hard --distractors 500``, seed 0) stage by stage, without attribution
(which is not computed for derived methods and would dominate the time), and prints for each method its R@1,
µAP and recall at precision 0.9 (each trick's gain over its base method), the trick's cost per copy, and R@1
on the copies whose chain holds each composite op. It also prints what bounds score normalisation here: the
recall any re-scoring could reach (a copy's original anywhere in its 10 predictions) and where the false
matches that outrank true ones come from. The hard preset makes a quarter of the distractor queries hard
negatives (``malle.data.hard_negatives``); for each kind of distractor query (copies of spare photos and each
negative kind) it prints how many pass each method's threshold at precision 0.9, and for the methods with a bank
default (``malle.bank.thresholds.DEFAULTS``) the thresholds this run measures and what the default gives here.
Writes bench/results/hard_preset.md, keeping its section headed ``BEFORE_HEADING`` (earlier figures) at the
end. Skips cleanly (exit 0, with a message) when the dataset is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)
from reproduce import DEFAULT_DATA, markdown  # noqa: E402

from malle.bank.thresholds import DEFAULTS  # noqa: E402
from malle.data.distractor_queries import COPY_KIND  # noqa: E402
from malle.data.hard_negatives import KINDS  # noqa: E402
from malle.evaluation import micro_ap as openset  # noqa: E402
from malle.io import cache  # noqa: E402
from malle.lab.experiment import Experiment, ExperimentConfig  # noqa: E402
from malle.lab.stages.outputs import BackgroundOutputs, OpenSetOutputs, SearchOutputs  # noqa: E402
from malle.ops import COMPOSITE_OPS, get_preset  # noqa: E402
from malle.tricks.methods import parse  # noqa: E402
from malle.tricks.normalise import ScoreNormalisation, background_index, background_similarity  # noqa: E402

BASES = ("sscd", "sscd_distilled", "efficientnet_lite2")
DEFAULT_METHODS = (*(f"{b}{t}" for b in BASES for t in ("", "+norm", "+regions", "+verify")),
                   *(f"sscd_distilled{t}" for t in ("+regions+norm", "+verify+norm", "+regions+verify",
                                                    "+regions+verify+norm")), "phash", "pdq")
COMPOSITES = tuple(op.name for op in COMPOSITE_OPS)
TOP_FALSE = 200  # the highest-scoring false matches looked at for where they come from
BEFORE_HEADING = "## Before the hard negatives"  # the earlier figures, kept below this run's
QUERY_KINDS = (COPY_KIND, *(kind.name for kind in KINDS))


def formatted(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Numbers as text: gains signed, a missing gain (a base method) as a dash, costs with two decimals."""
    def cell(column, value):
        if pd.isna(value):
            return "–"
        if "gain" in column:
            return f"{value:+.{digits}f}"
        return f"{value:.2f}" if column.endswith("ms/copy") else f"{value:.{digits}f}" if isinstance(
            value, float) else str(value)
    return pd.DataFrame({c: [cell(c, v) for v in table[c]] for c in table.columns})


def recall_at_1(exp: Experiment, method: str) -> pd.Series:
    table = cache.read_table(SearchOutputs(exp.stage("search", method).folder).per_query).reset_index(drop=True)
    return (table["rank"].astype("Float64") == 1).fillna(False).astype(bool)


def method_row(exp: Experiment, method: str, bases: dict) -> dict:
    start = time.perf_counter()
    scores = exp.stage("openset", method).meta
    search = exp.stage("search", method).meta
    hit = recall_at_1(exp, method)
    row = {"method": method, "R@1": hit.mean(), "µAP": scores["uap"], "R@P90": scores["recall_at_p90"]}
    base = bases.get(parse(method).base)
    if parse(method).is_derived and base is not None:
        row["µAP gain"] = row["µAP"] - base["µAP"]
        row["R@P90 gain"] = row["R@P90"] - base["R@P90"]
    row["trick ms/copy"] = search.get("tricks_ms_per_query", 0.0)
    ops = exp.manifest["ops"].str.split("|").reset_index(drop=True)
    for op in COMPOSITES:
        row[f"R@1 {op}"] = hit[ops.apply(lambda chain, op=op: op in chain)].mean()
    row["R@1 no composite"] = hit[ops.apply(lambda chain: not set(chain) & set(COMPOSITES))].mean()
    print(f"{method}: µAP {row['µAP']:.4f}, R@1 {row['R@1']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return row


def bounds(exp: Experiment, method: str) -> dict:
    """What limits any re-scoring of ``method``'s predictions, such as score normalisation."""
    predictions = cache.read_table(OpenSetOutputs(exp.stage("openset", method).folder).predictions)
    found = predictions[predictions["is_match"]]["query"].nunique() / len(exp.manifest)
    false = predictions[~predictions["is_match"]].nlargest(TOP_FALSE, "score")
    from_copies = int(false["query"].isin(set(exp.manifest["file"])).sum())
    kinds = exp.distractor_manifest.set_index("file")["kind"]
    from_negatives = int(false["query"].isin(set(kinds.index[kinds != COPY_KIND])).sum())
    return {"method": method, "µAP": exp.stage("openset", method).meta["uap"], "recall ceiling": found,
            f"top {TOP_FALSE} false matches from copies' own candidates": from_copies,
            "from hard negatives": from_negatives}


def predictions_of(exp: Experiment, method: str) -> pd.DataFrame:
    return cache.read_table(OpenSetOutputs(exp.stage("openset", method).folder).predictions)


def false_matches_by_kind(exp: Experiment, method: str) -> dict:
    """Queries of each kind with a false match at ``method``'s threshold at precision 0.9 (none when it has none):
    the copies (a wrong candidate passes), the copies of spare photos and each kind of hard negative."""
    threshold = exp.stage("openset", method).meta["threshold_at_p90"]
    predictions = predictions_of(exp, method)
    passed = set(predictions.loc[~predictions["is_match"] & (predictions["score"] >= threshold), "query"])
    row = {"method": method, "threshold": threshold, "copies": counted(exp.manifest["file"], passed)}
    kinds = exp.distractor_manifest.set_index("file")["kind"]
    for kind in QUERY_KINDS:
        row["spare-photo copies" if kind == COPY_KIND else kind] = counted(kinds.index[kinds == kind], passed)
    return row


def counted(files, passed: set) -> str:
    files = pd.Index(files)
    return f"{int(files.isin(passed).sum())}/{len(files)}"


def stricter(metric, similarity: float) -> float:
    """The first threshold, in the metric's unit, that ``similarity`` does not pass (6 decimals for cosine)."""
    if metric.binary:
        return metric.from_similarity(similarity) - 1
    return round(np.floor(similarity * 1e6) / 1e6 + 1e-6, 6)


def bank_thresholds(exp: Experiment, method: str) -> dict:
    """The thresholds this run measures for a bank default (in the metric's unit), and what the current default
    gives here."""
    scores, metric = exp.stage("openset", method).meta, exp.descriptor(method).metric
    predictions = predictions_of(exp, method)
    default = DEFAULTS[method].threshold
    at_default = openset.at_threshold(predictions, float(metric.similarity(np.asarray([default]))[0]),
                                      len(exp.manifest))
    return {"method": method, "threshold at P90": metric.from_similarity(scores["threshold_at_p90"]),
            "recall at P90": scores["recall_at_p90"],
            "no false match": stricter(metric, predictions.loc[~predictions["is_match"], "score"].max()),
            "bank default": default, "precision at the default": at_default["precision"],
            "recall at the default": at_default["recall"], "false matches at the default": at_default[
                "false_positives"]}


def earlier(path: Path) -> list[str]:
    """The section of the existing report headed ``BEFORE_HEADING``, to keep (none if there is none)."""
    text = path.read_text() if path.exists() else ""
    start = text.find(BEFORE_HEADING)
    return ["", *text[start:].rstrip().splitlines()] if start >= 0 else []


# A diagnosis on the evaluation data itself, to bound what any setting could do; never used to choose one.
DIAGNOSIS_GRID = [ScoreNormalisation(beta, first, last) for beta in (0.5, 1.0, 2.0)
                  for first, last in ((1, 1), (1, 3), (1, 10), (5, 10))]


class NormDiagnosis:
    """Score normalisation recomputed from one base method's cached codes (exact search, as the run's)."""

    def __init__(self, exp: Experiment, method: str):
        self.n_positives = len(exp.manifest)
        self.references = exp.database_codes(method).astype(np.float32)
        files = list(exp.database(method)["file"])
        self.copies = exp.codes(method)[1].astype(np.float32)
        self.truth = np.array([files.index(s) for s in exp.manifest["source"]])
        openset = OpenSetOutputs(exp.stage("openset", method).folder)
        background = BackgroundOutputs(exp.stage("background", method).folder)
        self.distractors = cache.read_npy(openset.distractor_codes).astype(np.float32)
        self.background = cache.read_npy(background.codes).astype(np.float32)

    def shift(self, codes: np.ndarray, norm: ScoreNormalisation | None, background: np.ndarray) -> np.ndarray:
        """What ``+norm`` subtracts from each of ``codes``' scores (malle's own normalisation; 0 without one)."""
        if norm is None:
            return np.zeros(len(codes))
        return norm.beta * background_similarity(codes, background_index(background), norm)

    def uap(self, norm: ScoreNormalisation | None, references=None, background=None) -> float:
        references = self.references if references is None else references
        background = self.background if background is None else background
        tables = []
        for offset, (codes, truth) in enumerate(((self.copies, self.truth),
                                                 (self.distractors, np.full(len(self.distractors), -1)))):
            scores = codes @ references.T
            top = np.argsort(-scores, axis=1)[:, :10]
            shifted = np.take_along_axis(scores, top, 1) - self.shift(codes, norm, background)[:, None]
            tables.append(pd.DataFrame({"query": np.repeat(np.arange(len(codes)) + offset * 10**7, top.shape[1]),
                                        "score": shifted.ravel(), "is_match": (top == truth[:, None]).ravel()}))
        return openset.score(pd.concat(tables), n_positives=self.n_positives)[0].uap

    def row(self, method: str) -> dict:
        base = self.uap(None)
        best = max(DIAGNOSIS_GRID, key=self.uap)
        half = np.random.default_rng(0).permutation(len(self.background))
        moved, kept = self.background[half[: len(half) // 2]], self.background[half[len(half) // 2:]]
        bigger = np.concatenate([self.references, moved])
        sscd = ScoreNormalisation()
        background_sim = self.shift(self.distractors, sscd, self.background)
        true_scores = (self.copies * self.references[self.truth]).sum(axis=1)
        return {
            "method": method,
            "corr(distractor's best score, background)": np.corrcoef(
                (self.distractors @ self.references.T).max(axis=1), background_sim)[0, 1],
            "corr(copy's true score, background)": np.corrcoef(
                true_scores, self.shift(self.copies, sscd, self.background))[0, 1],
            "best gain over the grid": self.uap(best) - base, "at": best.spec(),
            f"gain with {len(moved)} background images as references": (
                self.uap(sscd, bigger, kept) - self.uap(None, bigger, kept)),
        }


def load() -> str:
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--distractors", type=int, default=500)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: Malle's)")
    parser.add_argument("--precision", default="auto", help="network inference precision (the bank's is fp32)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: {args.data} is not here (the held-out-like ImageNet photos)")
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    config = ExperimentConfig(data=str(args.data), n=args.n, seed=0, methods=tuple(methods),
                              augment=get_preset("hard").augment(), distractors=args.distractors,
                              precision=args.precision)
    exp = Experiment(config, args.cache, log=print)
    exp.check()
    rows: list[dict] = []
    for method in methods:
        rows.append(method_row(exp, method, {r["method"]: r for r in rows if not parse(r["method"]).is_derived}))
    table = pd.DataFrame(rows)
    main_columns = ["method", "R@1", "µAP", "µAP gain", "R@P90", "R@P90 gain", "trick ms/copy"]
    composite_columns = ["method", *(f"R@1 {op}" for op in COMPOSITES), "R@1 no composite"]
    floats = [m for m in methods if parse(m).base in BASES and not parse(m).is_derived]
    composites = exp.manifest["ops"].str.split("|").explode().isin(COMPOSITES).sum()
    kinds = exp.distractor_manifest["kind"]
    lines = [
        f"# Hard preset ({args.data.name}: {args.n} originals, {len(exp.manifest)} copies with {composites} "
        f"composite edits, {len(kinds)} distractor queries: {int((kinds == COPY_KIND).sum())} copies of spare "
        f"photos and {int((kinds != COPY_KIND).sum())} hard negatives; seed 0, precision {args.precision})",
        "", f"Machine: {machine()}; load average {load()} when the report was written", "",
        "Each trick's gain is over its base method in this run; its cost is per copy, on top of the search, as "
        "first computed (the machine may have been shared then).", "",
        markdown(formatted(table[[c for c in main_columns if c in table]])),
        "", "**R@1 on the copies whose chain holds each composite op**", "",
        markdown(formatted(table[composite_columns], digits=3)),
        "", "**What bounds score normalisation** (it shifts all of a query's scores together, so it can only reorder "
        "whole queries against each other)", "",
        markdown(formatted(pd.DataFrame([bounds(exp, m) for m in floats]))),
    ]
    normalised = [m for m in floats if f"{m}+norm" in methods]
    if normalised:
        lines += ["", "**Score normalisation, diagnosed** on this evaluation data, to bound what any setting could "
                  "do (never used to choose one): correlations of background similarity (SSCD's setting) with a "
                  "distractor query's best score and with a copy's true score; the best gain over beta 0.5, 1, 2 "
                  "and background ranks 1, 1-3, 1-10, 5-10; and SSCD's setting's gain when half the background set "
                  "joins the database as reference distractors", "",
                  markdown(formatted(pd.DataFrame([NormDiagnosis(exp, m).row(m) for m in normalised])))]
    lines += ["", "**False matches per kind of query at each method's threshold at precision 0.9**: queries with "
              "at least one wrong prediction scoring at least the threshold (a similarity; hashes: minus the "
              "distance), of all queries of that kind. For copies, a wrong candidate; every distractor query's "
              "prediction is wrong.", "",
              markdown(formatted(pd.DataFrame([false_matches_by_kind(exp, m) for m in methods])))]
    banked = [m for m in methods if m in DEFAULTS]
    if banked:
        lines += ["", "**Bank thresholds measured here** (in the metric's unit: cosine, or Hamming bits), against the "
                  "bank's default (`malle.bank.thresholds.DEFAULTS`): no false match is the first threshold that "
                  "no wrong prediction of this run passes", "",
                  markdown(formatted(pd.DataFrame([bank_thresholds(exp, m) for m in banked]), digits=6))]
    path = ROOT / "bench" / "results" / "hard_preset.md"
    publish(lines + earlier(path), path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

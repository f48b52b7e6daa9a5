"""Search page: any image against the index of originals, with every method."""

from __future__ import annotations

import math
from dataclasses import dataclass

from malle.bank import thresholds
from malle.dashboard.bank import verdict
from malle.dashboard.shared import Ranking, rank_everywhere
from malle.io.images import load_rgb
from malle.lab.experiment import Results


def search_rankings(results: Results, image_bytes: bytes, source: str | None, top: int) -> list[Ranking]:
    """Top-``top`` originals for an image file's bytes, per method (``source``: the known original, if any)."""
    return rank_everywhere(results, load_rgb(image_bytes), source, top)


def copy_source(results: Results, copy: str) -> str:
    """The true original of one of the experiment's copies."""
    manifest = results.experiment.manifest
    return manifest.loc[manifest["file"] == copy, "source"].iloc[0]


@dataclass(frozen=True)
class Threshold:
    value: float  # in the method's own unit
    source: str


def calibrated_threshold(results: Results, method: str) -> Threshold | None:
    """The threshold a search is judged by: the method's calibrated default (``malle.bank.thresholds``, the same a
    bank collection gets), else this run's own threshold at precision 0.9 once its open set is computed; None
    when the method has neither."""
    default = thresholds.DEFAULTS.get(method)
    if default is not None:
        return Threshold(default.threshold, "calibrated: the bank's default threshold")
    exp = results.experiment
    if results.has_openset and exp.is_cached("openset", method):
        similarity = exp.stage("openset", method).meta["threshold_at_p90"]
        if similarity is not None and not math.isnan(similarity):
            return Threshold(exp.descriptor(method).metric.from_similarity(similarity) + 0.0,
                             "this run's threshold at precision 0.9")
    return None


def search_verdict(results: Results, ranking: Ranking) -> str:
    """Markdown: is the best match a copy at the calibrated threshold? With the threshold and where it comes from."""
    found = calibrated_threshold(results, ranking.method)
    if found is None:
        return "no calibrated threshold for this method, so no verdict"
    if ranking.table.empty:
        return "**no copy**: nothing found"
    desc = results.experiment.descriptor(ranking.method)
    is_copy, words = verdict(float(ranking.table["score"].iloc[0]), found.value, desc.metric, desc.dim)
    icon = ":material/content_copy:" if is_copy else ":material/block:"
    verdict_word, rest = words.split(": ", 1)
    return f"{icon} **{verdict_word}** (#1: {rest}; {found.source})"

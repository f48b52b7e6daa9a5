"""Search page: any image against the index of originals, with every method."""

from __future__ import annotations

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

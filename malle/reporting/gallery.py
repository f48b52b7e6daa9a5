"""The failure gallery: a few representative misses per method, with the images that explain them.

The numbers come from the run's folder; the images and the op charged with each miss live in the cache of
the experiment that made the run, which ``RunImages`` re-opens (only reading stages that are cached).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from html import escape
from pathlib import Path

import pandas as pd

from ..dashboard.shared import THUMB_PX, thumbnail_jpeg
from ..errors import MalleError
from ..experiment import Experiment, ExperimentConfig, Results
from ..metrics import metric_named
from ..ops.chains import chain_from_json, describe_chain
from .html import absent, paragraph
from .run_folder import RunFolder

PER_METHOD = 4  # cards per method: one per op most often charged, then the worst ranks
UNKNOWN = "not known (the attribution is not in the cache)"


@dataclass
class RunImages:
    """The run's images and per-miss attributions, read from the cache of the experiment that made the run."""

    experiment: Experiment
    charges: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> {missed query: op(s) charged}

    @classmethod
    def of(cls, results: Results) -> RunImages:
        """From a live run (the dashboard): everything is at hand."""
        return cls(results.experiment, {m: _charged(results.charged(m)) for m in results.methods})

    @classmethod
    def reopen(cls, run: RunFolder, cache_root: Path | str | None) -> tuple[RunImages | None, str]:
        """From the run's config.json and a cache; (None, why) when that cache no longer holds the run."""
        names = {f.name for f in dataclass_fields(ExperimentConfig)}
        try:
            config = ExperimentConfig.from_dict({k: v for k, v in run.config.items() if k in names})
            exp = Experiment(config, cache_root)
            cached = exp.is_cached("samples") and exp.is_cached("copies") and all(
                exp.is_cached("search", m) and exp.is_cached("attribution", m) for m in exp.methods)
        except (MalleError, KeyError, TypeError, ValueError) as err:
            return None, f"the experiment cannot be re-opened from config.json ({err})"
        if not cached or list(exp.methods) != run.methods:
            return None, f"the cache at {exp.root} no longer holds this run (pass the run's --cache)"
        results = Results(exp, run.per_query)
        return cls.of(results), ""

    def query(self, file: str) -> Path:
        return self.experiment.copies_dir / file

    def original(self, file: str) -> Path:
        return self.experiment.originals_dir / file

    def database_item(self, method: str, file: str) -> Path | None:
        database = self.experiment.database(method)["file"]
        where = database.index[database == file]
        return self.experiment.database_image(method, int(where[0])) if len(where) else None


def _charged(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["query"], table["charged"].str.replace("|", " and ", regex=False)))


def image_uri(path: Path | None, px: int = THUMB_PX) -> str | None:
    """A downscaled JPEG of the file as a data URI; None when there is no such readable image."""
    if path is None or not Path(path).is_file():
        return None
    try:
        data = thumbnail_jpeg(path, px)
    except (MalleError, OSError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def representative_misses(per_query: pd.DataFrame, method: str, charged: dict[str, str],
                          n: int = PER_METHOD) -> pd.DataFrame:
    """Up to ``n`` misses of ``method``: the worst-ranked one for each op most often charged, then the worst."""
    part = per_query[per_query["method"] == method]
    missed = part[part["rank"].fillna(float("inf")) > 1].copy()
    if missed.empty:
        return missed
    # A one-op chain's miss is that op's; longer chains take what attribution charged.
    missed["charged"] = [charged.get(q) or (ops if length == 1 else UNKNOWN)
                         for q, ops, length in zip(missed["query"], missed["ops"], missed["chain_length"])]
    missed = missed.sort_values(["rank", "query"], ascending=[False, True], na_position="first")
    order = missed["charged"].value_counts().index
    picks = [missed[missed["charged"] == op].iloc[0] for op in order[:n]]
    chosen = pd.DataFrame(picks)
    rest = missed.drop(index=chosen.index)
    return pd.concat([chosen, rest.head(n - len(chosen))])


def _figure(uri: str | None, caption: str) -> str:
    img = f'<img src="{uri}" alt="{escape(caption)}">' if uri else "<p class=\"absent\">(image not available)</p>"
    return f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>"


def card(run: RunFolder, images: RunImages | None, method: str, row, chains: dict[str, str]) -> str:
    metric = metric_named(run.costs.set_index("method").loc[method, "metric"])
    dim = int(run.costs.set_index("method").loc[method, "dim"])
    rank = "beyond the search depth" if pd.isna(row.rank) else f"rank {int(row.rank)}"
    uris = (images.query(row.query), images.original(row.source), images.database_item(method, row.top1)) \
        if images else (None, None, None)
    figures = [
        _figure(image_uri(uris[0]), f"query {row.query}"),
        _figure(image_uri(uris[1]), f"true original {row.source} ({rank}, {metric.score_name} "
                                    f"{metric.format_score(row.true_score, dim)})"),
        _figure(image_uri(uris[2]), f"came first: {row.top1} ({metric.score_name} "
                                    f"{metric.format_score(row.top1_score, dim)})"),
    ]
    chain = chains.get(row.query, row.ops)
    return (f'<div class="card"><div class="imgs">{"".join(figures)}</div>'
            f"<p><b>Op charged:</b> {escape(str(row.charged))}<br><b>Edits:</b> {escape(chain)}</p></div>")


def gallery_section(run: RunFolder, images: RunImages | None, why_no_images: str) -> str:
    chains = {f: describe_chain(chain_from_json(c)) for f, c in zip(run.manifest["file"], run.manifest["chain"])
              if isinstance(c, str) and c.startswith("[")}
    parts = [paragraph(f"Up to {PER_METHOD} misses per method (the true original was not first): the worst-ranked "
                       "copy for each edit most often charged with a miss, then the worst ranks. The op charged is "
                       "the one whose removal from the chain restores the hit (attribution).", "note")]
    if images is None:
        parts.append(absent(f"Images left out: {why_no_images}."))
    for method in run.methods:
        charged = images.charges.get(method, {}) if images else {}
        misses = representative_misses(run.per_query, method, charged)
        parts.append(f"<h3>{escape(run.labels.get(method, method))}</h3>")
        if misses.empty:
            parts.append(absent("No misses: every copy found its original first."))
            continue
        cards = "".join(card(run, images, method, row, chains) for row in misses.itertuples())
        parts.append(f'<div class="gallery">{cards}</div>')
    return "".join(parts)

"""The failure gallery: a few representative misses per method, with the images that explain them.

The misses come from the run's folder; their pictures and the op charged with each from ``images``.
"""

from __future__ import annotations

from html import escape

import pandas as pd

from malle.ops.chains import chain_from_json, describe_chain
from malle.report.html import absent, paragraph
from malle.report.picture_sources import THUMB_PX, Images
from malle.report.run_folder import RunFolder
from malle.retrieval.metrics import metric_named

PER_METHOD = 4  # cards per method: one per op most often charged, then the worst ranks
UNKNOWN = "not known (the attribution is not in the cache)"


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


def card(run: RunFolder, images: Images | None, method: str, row, chains: dict[str, str]) -> str:
    metric = metric_named(run.costs.set_index("method").loc[method, "metric"])
    dim = int(run.costs.set_index("method").loc[method, "dim"])
    rank = "beyond the search depth" if pd.isna(row.rank) else f"rank {int(row.rank)}"
    uris = (images.query(row.query), images.original(row.source), images.database_item(method, row.top1)) \
        if images else (None, None, None)
    figures = [
        _figure(uris[0], f"query {row.query}"),
        _figure(uris[1], f"true original {row.source} ({rank}, {metric.score_name} "
                         f"{metric.format_score(row.true_score, dim)})"),
        _figure(uris[2], f"came first: {row.top1} ({metric.score_name} {metric.format_score(row.top1_score, dim)})"),
    ]
    chain = chains.get(row.query, row.ops)
    return (f'<div class="card"><div class="imgs">{"".join(figures)}</div>'
            f"<p><b>Op charged:</b> {escape(str(row.charged))}<br><b>Edits:</b> {escape(chain)}</p></div>")


def gallery_section(run: RunFolder, images: Images | None, why_no_images: str) -> str:
    chains = {f: describe_chain(chain_from_json(c)) for f, c in zip(run.manifest["file"], run.manifest["chain"])
              if isinstance(c, str) and c.startswith("[")}
    parts = [paragraph(f"Up to {PER_METHOD} misses per method (the true original was not first): the worst-ranked "
                       "copy for each edit most often charged with a miss, then the worst ranks. The op charged is "
                       "the one whose removal from the chain restores the hit (attribution).", "note")]
    if images is None:
        parts.append(absent(f"Images left out: {why_no_images}."))
    else:
        parts.append(paragraph(f"Images from {images.origin}; at most {THUMB_PX} px, JPEG.", "note"))
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

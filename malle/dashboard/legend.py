"""The one legend every page shows beside its charts: each method's short name (what headers and legends use)
with its full label, family, weights, engine and precision."""

from __future__ import annotations

from malle.lab.results import Results
from malle.report.palette import short_names


def rows(results: Results) -> list[dict[str, str]]:
    names = short_names(results.methods)
    costs = results.costs().set_index("method")
    meta = results.methods_table().set_index("method")
    return [{"name": names[m], "label": results.labels[m], "family": str(costs.loc[m, "family"]),
             "weights": str(meta.loc[m, "weights"]), "engine": str(costs.loc[m, "runtime"]),
             "precision": str(costs.loc[m, "precision"]), "licence": str(meta.loc[m, "licence"])}
            for m in results.methods]


def markdown(results: Results, licence: bool = False) -> str:
    """A Markdown list: **short name**: full label; family · weights · engine · precision (· licence). Lines wrap,
    so it never runs off the page the way a wide table would."""
    return "\n".join(f"- **{r['name']}**: {r['label']}; {r['family']} · weights: {r['weights']} · "
                     f"engine: {r['engine']} · precision: {r['precision']}"
                     + (f" · licence: {r['licence']}" if licence else "") for r in rows(results))

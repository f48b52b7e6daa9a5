"""The report's first sections: the headline, what each method is, and Recall@K next to the published numbers."""

from __future__ import annotations

from html import escape

import pandas as pd

from malle.descriptors.families import COPY_DETECTION, IMAGENET_CNN, PERCEPTUAL_HASH, Family, as_family
from malle.lab import published as reference
from malle.ops import REFERENCE_OPS
from malle.report.html import Cell, number, paragraph, table, text
from malle.report.run_folder import RunFolder

# The tables carry family names; these give the built-in ones their titles and reading order.
KNOWN_FAMILIES = {str(f): f for f in (COPY_DETECTION, IMAGENET_CNN, PERCEPTUAL_HASH)}
REFERENCE_N = 200  # originals in the reference experiment
VERSUS_KS = (1, 10)  # the side-by-side differences; the tables above have every K
K11_NOTE = ("K = 11 is there because the reference experiment published Recall@11 next to K = 1, 3, 5 and 10; "
            "the row is kept so that every row lines up with a published one.")


def checked(kind: str, method: str, value: float | None) -> str:
    """A number the tests compare with the CSVs: ``kind`` is r1 or uap."""
    if value is None or pd.isna(value):
        return "–"
    return f'<span data-check="{kind}" data-method="{escape(method)}">{value:.4f}</span>'


def short(label: str) -> str:
    """A label without its details in brackets."""
    return label.split(" (")[0]


def weakest_edit(run: RunFolder, method: str) -> tuple[str, float] | None:
    """The op under which ``method``'s instance Recall@1 is lowest."""
    part = run.per_op[(run.per_op["method"] == method) & (run.per_op["level"] == "instance")
                      & (run.per_op["k"] == 1)]
    if part.empty:
        return None
    worst = part.sort_values(["recall", "op"]).iloc[0]
    return str(worst["op"]), float(worst["recall"])


def family_of(name: str) -> Family:
    return KNOWN_FAMILIES.get(name) or as_family(name)


def family_sentence(run: RunFolder, family: Family, methods: list[str]) -> str:
    best = max(methods, key=lambda m: (run.r1(m), run.uap(m) or 0.0))
    r1, uap = run.r1(best), run.uap(best)
    words = (f"<b>{escape(family.title)}:</b> {escape(short(run.labels[best]))} finds the "
             f"original first for {r1:.1%} of the modified copies (R@1 {checked('r1', best, r1)}")
    words += f", µAP {checked('uap', best, uap)})" if uap is not None else ")"
    weakest = weakest_edit(run, best)
    if weakest and weakest[1] < 1:
        words += f"; it misses most under <i>{escape(weakest[0])}</i> (R@1 {weakest[1]:.2f} with that edit)"
    else:
        words += "; no edit made it miss"
    others = [m for m in methods if m != best]
    if others:
        words += ". Also run: " + ", ".join(f"{escape(short(run.labels[m]))} (R@1 {checked('r1', m, run.r1(m))})"
                                            for m in others)
    return f"<p>{words}.</p>"


def headline(run: RunFolder) -> str:
    groups: dict[Family, list[str]] = {}
    for method in run.methods:
        groups.setdefault(family_of(run.families.get(method, "other")), []).append(method)
    order = sorted(groups, key=lambda family: (family.order, family.title))
    best = max(run.methods, key=lambda m: (run.r1(m), run.uap(m) or 0.0))
    uap = run.uap(best)
    lead = (f"<p class=\"lead\">Best method: <b>{escape(run.labels[best])}</b>, instance R@1 "
            f"{checked('r1', best, run.r1(best))}" + (f", µAP {checked('uap', best, uap)}" if uap is not None else "")
            + ".</p>")
    n_copies = len(run.per_query[run.per_query["method"] == best])
    scope = paragraph(f"{len(run.originals)} originals, {n_copies} modified copies (each made with "
                      f"{run.config.get('chain_lengths', 'a chain of')} edits), {len(run.methods)} methods. R@1 is "
                      "the share of copies whose original is the first result"
                      + ("; µAP (open set) also counts how confidently a method rejects images that copy nothing."
                         if run.openset is not None else "."), "note")
    return lead + scope + "".join(family_sentence(run, f, groups[f]) for f in order)


def methods_section(run: RunFolder) -> str:
    costs = run.costs.set_index("method")
    meta = run.methods_table.set_index("method")
    rows = []
    for m in run.methods:
        rows.append([text(costs.loc[m, "label"]), text(costs.loc[m, "family"]), text(meta.loc[m, "weights"]),
                     text(meta.loc[m, "licence"]), text(costs.loc[m, "runtime"]), text(costs.loc[m, "precision"]),
                     text(costs.loc[m, "cpu"]), number(costs.loc[m, "images_per_s"], 1)])
    return table(["method", "family", "weights", "licence", "engine", "precision", "CPU", "images/s"], rows) + \
        paragraph("images/s: originals and copies encoded per second on the machine that made the run, "
                  "decoding included.", "note")


def recall_table(run: RunFolder, level: str) -> str:
    """Rows K; a column per method measured here, then the published ResNet-50 and pHash."""
    measured = run.recall[run.recall["level"] == level]
    published = reference.reference_recall()
    published = published[published["level"] == level]
    ks = sorted(set(measured["k"]))
    header = ["K", *(short(run.labels[m]) for m in run.methods),
              *(f"{label}" for label in reference.REFERENCE_LABELS.values())]
    rows = []
    for k in ks:
        row: list[Cell] = [Cell(str(k), numeric=True)]
        for m in run.methods:
            value = measured[(measured["method"] == m) & (measured["k"] == k)]["recall"]
            row.append(number(float(value.iloc[0]) if len(value) else None, 4,
                              {"check": "recall", "method": m, "level": level, "k": str(k)}))
        for ref in reference.REFERENCE_LABELS:
            value = published[(published["method"] == ref) & (published["k"] == k)]["recall"]
            row.append(number(float(value.iloc[0]) if len(value) else None))
        rows.append(row)
    return table(header, rows)


def versus_table(run: RunFolder) -> str:
    pairs = reference.reference_pairs(run.methods)
    versus = reference.versus_reference(run.recall, pairs)
    versus = versus[versus["k"].isin(VERSUS_KS)]
    if versus.empty:
        return paragraph("No method of this run has a published counterpart (an ImageNet CNN or a hash).", "absent")
    rows = [[text(r.level), Cell(str(r.k), numeric=True), text(short(run.labels[r.method])), number(r.recall),
             text(reference.REFERENCE_LABELS[r.reference_method]), number(r.published), number(r.difference)]
            for r in versus.itertuples()]
    return table(["level", "K", "measured here", "R@K", "published", "R@K", "difference"], rows)


def differences(run: RunFolder) -> list[str]:
    """What differs from the reference experiment in this run, and why it matters."""
    cfg, pairs = run.config, reference.reference_pairs(run.methods)
    notes = []
    cnn = next((m for m, ref in pairs.items() if ref == "resnet50"), None)
    if cnn and cnn != "resnet50":
        notes.append(f"The ImageNet CNN is {short(run.labels[cnn])}, not ResNet-50: no package ships ResNet-50's "
                     "ImageNet weights, so it runs only where they are provided (--resnet50-weights). Compare "
                     "the CNN columns with care.")
    elif not cnn:
        notes.append("No ImageNet CNN ran, so the published ResNet-50 numbers have no counterpart here.")
    notes.append(f"The photos differ: the reference sampled {REFERENCE_N} originals from ImageNet-Mini's val/; "
                 f"this run sampled {len(run.originals)} from {cfg.get('data')} (seed {cfg.get('seed')}, "
                 f"{cfg.get('n_classes')} classes taken whole).")
    notes.append(f"Chain length is this run's choice ({cfg.get('chain_lengths')}): the reference does not give "
                 "its distribution, and longer chains lower every method's recall (see Edits).")
    ops = list(cfg.get("augment", {}).get("ops", REFERENCE_OPS))
    if set(ops) != set(REFERENCE_OPS):
        added, dropped = sorted(set(ops) - set(REFERENCE_OPS)), sorted(set(REFERENCE_OPS) - set(ops))
        notes.append("The edits differ from the reference ten: " + "; ".join(
            part for part in (f"added {', '.join(added)}" if added else "",
                              f"left out {', '.join(dropped)}" if dropped else "") if part) + ".")
    for row in run.costs.itertuples():
        if row.top1_tie_rate > 0.01:
            notes.append(f"{short(row.label)}: {row.top1_tie_rate:.1%} of top-1 results are ties, broken by database "
                         f"id; R@1 would lie between {row.r1_ties_lost:.4f} (every tie lost) and "
                         f"{row.r1_ties_won:.4f} (every tie won). The reference does not say how it broke ties.")
    if cfg.get("db_distractors") or cfg.get("db_extra"):
        notes.append("The database holds extra references that no query copies, which the reference did not have.")
    return notes


def recall_section(run: RunFolder) -> str:
    parts = [paragraph("Instance level: the copy's own original is among the first K results. Class level: any "
                       "original of its class is. Published columns are the reference experiment's numbers "
                       "(200 ImageNet originals), not measured here. " + K11_NOTE, "note")]
    for level in ("instance", "class"):
        parts += [f"<h3>{level.capitalize()} Recall@K</h3>", recall_table(run, level)]
    parts += ["<h3>Measured here next to published</h3>", versus_table(run),
              "<h3>What differs from the reference, and why</h3>",
              "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in differences(run)) + "</ul>"]
    return "".join(parts)

"""``malle dedup DIR``: the modified copies inside one folder, as groups.

Every image is encoded once and put in an exact FAISS index; one range search at the threshold finds,
for each image, every other image at least as close as the threshold (``is_close_enough``). The default
threshold is the method's strict calibrated one (``thresholds.Calibrated.no_false_match``): no false match
of the reproduction run's open set passes it. The precision-0.9 threshold that banks use is too loose here,
since a folder of n images offers n²/2 pairs.

Grouping by connected components would chain: A close to B and B close to C puts A and C together even
when they share nothing (a photo, a crop of it, a crop of that crop with a new overlay...). Groups here
are stars instead (star clustering): images are taken in order of how many neighbours they have (most
first; ties by path), and each image not yet grouped becomes the centre of a group holding itself and
all its neighbours not yet grouped. Every member is therefore within the threshold of its group's centre,
so a group never spans more than two steps, and no image is in two groups. An image whose neighbours were
all taken by earlier groups stays alone. Each row's ``score`` is the member's score against the centre
(the centre's own row scores itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from malle.bank import thresholds
from malle.bank.bank import is_close_enough
from malle.data.sampling import discover
from malle.descriptors import Descriptor, available_methods, create_descriptor
from malle.errors import ConfigError
from malle.retrieval.metrics import Metric

# The best method that runs here comes first: SSCD's student is nearly as good as SSCD and several times faster.
PREFERENCE = ("sscd_distilled", "sscd", "efficientnet_lite2", "pdq", "phash")
GROUP_COLUMNS = ["group", "path", "score"]


@dataclass
class Dedup:
    groups: pd.DataFrame  # group, path, score: one row per member of a group of two or more, centre first
    skipped: pd.DataFrame  # path, reason
    method: str
    label: str
    threshold: float
    score_name: str
    n_images: int


def default_method() -> str:
    runnable = set(available_methods())
    for method in PREFERENCE:
        if method in runnable:
            return method
    raise ConfigError(f"none of {', '.join(PREFERENCE)} can run here; pass --method")


def default_threshold(method: str) -> float:
    """The strict calibrated threshold: a folder's every pair is a chance of a false match (``thresholds``)."""
    calibrated = thresholds.DEFAULTS.get(method)
    if calibrated is None:
        raise ConfigError(f"{method} has no calibrated threshold; pass --threshold")
    return calibrated.no_false_match


def neighbours(metric: Metric, codes: np.ndarray, threshold: float) -> list[dict[int, float]]:
    """For every row, {other row: score} of the rows at least as close as ``threshold``."""
    index = metric.build_index(codes)
    # FAISS keeps strictly closer results (IP: score > radius; binary: distance < radius), so ask with a
    # slightly looser radius and keep exactly what ``is_close_enough`` accepts.
    step = 1 if metric.binary else 1e-5
    radius = metric.from_similarity(metric.similarity(np.asarray([threshold]))[0] - step)
    query = np.ascontiguousarray(codes)
    if isinstance(index, faiss.IndexBinary):  # a binary index's radius is a whole number of bits
        lims, _, found = index.range_search(query, int(radius))
    else:
        lims, _, found = index.range_search(query, radius)
    out: list[dict[int, float]] = []
    for row in range(len(codes)):
        others = found[lims[row]:lims[row + 1]]
        others = others[others != row]
        scores = metric.pair_scores(np.repeat(codes[row:row + 1], len(others), axis=0), codes[others])
        close = is_close_enough(metric, scores, threshold)
        out.append({int(o): float(s) for o, s in zip(others[close], scores[close])})
    return out


def star_groups(near: list[dict[int, float]], names: list[str]) -> list[tuple[int, list[int]]]:
    """(centre, members including the centre) per group of two or more; see the module docstring."""
    order = sorted(range(len(near)), key=lambda i: (-len(near[i]), names[i]))
    grouped = np.zeros(len(near), dtype=bool)
    groups = []
    for centre in order:
        if grouped[centre]:
            continue
        members = [o for o in near[centre] if not grouped[o]]
        if not members:
            continue
        grouped[centre] = True
        grouped[members] = True
        groups.append((centre, [centre, *members]))
    return groups


def group_table(metric: Metric, codes: np.ndarray, near: list[dict[int, float]], names: list[str]) -> pd.DataFrame:
    groups = star_groups(near, names)
    groups.sort(key=lambda g: (-len(g[1]), names[g[0]]))
    rows = []
    for number, (centre, members) in enumerate(groups, 1):
        own = float(metric.pair_scores(codes[centre:centre + 1], codes[centre:centre + 1])[0])
        ranked = sorted(members[1:], key=lambda m: (metric.sort_key(np.asarray([near[centre][m]]))[0], names[m]))
        rows.append({"group": number, "path": names[centre], "score": own})
        rows += [{"group": number, "path": names[m], "score": near[centre][m]} for m in ranked]
    table = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    if metric.binary:
        table["score"] = table["score"].astype(int)
    return table


def find_copies(folder: Path, method: str | None = None, threshold: float | None = None,
                cache_root: Path | None = None, progress: Callable | None = None) -> Dedup:
    """Encode every image under ``folder`` and group the copies."""
    method = method or default_method()
    desc: Descriptor = create_descriptor(method, precision="fp32")
    if cache_root is not None:
        desc.use_cache(cache_root)
    limit = thresholds.check(default_threshold(method) if threshold is None else threshold, desc.metric, desc.dim)
    desc.load()
    candidates, passed_over = discover(Path(folder))
    encoded = desc.encode_files_skipping([c.path for c in candidates], progress=progress, desc=desc.label)
    names = [candidates[i].rel for i in encoded.kept]
    skipped = pd.concat([pd.DataFrame(passed_over, columns=["path", "reason"]), encoded.skipped],
                        ignore_index=True)
    near = neighbours(desc.metric, encoded.codes, limit)
    return Dedup(group_table(desc.metric, encoded.codes, near, names), skipped, method, desc.label, limit,
                 desc.score_name, len(names))

"""Logic behind the Streamlit dashboard (``streamlit_app.py`` and ``app_pages/``).

Everything here is plain pandas / Altair / Pillow on top of the engine's public
API, so it can be tested without a running Streamlit. The few helpers that need
Streamlit (caching, session state, thumbnail grids) import it inside the function.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image

from . import cache, evaluate, report
from .augment import (COPY_JPEG_QUALITY, OPS, AugmentConfig, ParamSpec, Step, apply_chain, chain_from_json,
                      chain_to_json, describe_chain)
from .descriptors import (DESCRIPTORS, ENV_RESNET50_WEIGHTS, resnet50_hub_checkpoint, resnet50_weights_available,
                          resolve_methods)
from .experiment import Experiment, ExperimentConfig, Results
from .imageio import IMAGE_SUFFIXES, BadImage, encode_jpeg, load_rgb
from .naming import unique_name

DEMO, FOLDER, UPLOAD = "Built-in demo photos", "A folder on disk", "Images uploaded in the browser"
SOURCES = (DEMO, FOLDER, UPLOAD)
SOURCE_KEYS = {DEMO: "demo", FOLDER: "folder", UPLOAD: "upload"}  # short, stable widget-key suffixes
LEVELS = tuple(evaluate.LEVELS)  # ("instance", "class")
THUMB_PX = 160
MAX_UPLOAD_MB = 20  # keep equal to server.maxUploadSize in .streamlit/config.toml
UPLOAD_TYPES = tuple(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
CONTEXT_KEY = "malle_context"
RESNET_SKIP_PREFIX = "ResNet-50 skipped"  # the engine's own notice, replaced by resnet50_notice()


# -- configuration ---------------------------------------------------------------------------
def default_n(source: str) -> int:
    """The CLI's defaults: 100 originals for the demo photos, 200 for a real dataset."""
    return 100 if source == DEMO else 200


def config_key(config: ExperimentConfig) -> str:
    """A hashable, stable key for Streamlit's caches (the config itself holds a dataclass)."""
    return json.dumps(config.as_dict(), sort_keys=True)


def config_from_key(key: str) -> ExperimentConfig:
    fields = json.loads(key)
    methods = fields.pop("methods")
    return ExperimentConfig(**{**fields, "augment": AugmentConfig(**fields["augment"]), "ks": tuple(fields["ks"]),
                               "methods": tuple(methods) if methods is not None else None})


def parse_app_args(argv: Sequence[str]) -> argparse.Namespace:
    """Options after ``streamlit run streamlit_app.py --``; anything else (e.g. pytest's) is ignored."""
    parser = argparse.ArgumentParser(prog="streamlit run streamlit_app.py --", add_help=False)
    parser.add_argument("--resnet50-weights", default=None, help="a ResNet-50 state-dict file")
    args, _ = parser.parse_known_args(list(argv))
    return args


def method_options(resnet50_weights: str | None = None) -> tuple[list[str], list[str]]:
    """(every method that can run here, the default selection).

    ResNet-50 is offered only when its weights are on disk: picking it otherwise
    could only end in an error, and the frame explains how to get them.
    """
    available, _ = resnet50_weights_available(resnet50_weights)
    options = [m for m in DESCRIPTORS if available or m != "resnet50"]
    defaults, _ = resolve_methods(None, resnet50_weights)
    return options, defaults


def resnet50_notice(resnet50_weights: str | None = None) -> str | None:
    """The one notice shown when ResNet-50 weights are missing, or None when they are there."""
    available, reason = resnet50_weights_available(resnet50_weights)
    if available:
        return None
    hub = resnet50_hub_checkpoint()
    return (
        f"**ResNet-50 is not shown:** {reason}. To add it, either connect to the internet once and run "
        f"`python -m malle demo --methods resnet50` (torchvision caches the weights at `{hub}`), copy "
        f"`{hub.name}` from a machine that has it to that path, or point at a ResNet-50 state dict with "
        f"`streamlit run streamlit_app.py -- --resnet50-weights PATH` (CLI: `--resnet50-weights PATH`) "
        f"or the environment variable `{ENV_RESNET50_WEIGHTS}=PATH`. "
        "Until then the CNN shown here is **EfficientNet-Lite2** (ImageNet weights shipped with its pip package)."
    )


def engine_notices(notices: Sequence[str]) -> list[str]:
    """The engine's log lines worth showing, without its ResNet-50 notice (resnet50_notice says more)."""
    return [n for n in dict.fromkeys(notices) if not n.startswith(RESNET_SKIP_PREFIX)]


# -- progress ---------------------------------------------------------------------------------
class ProgressReporter:
    """A tqdm-like factory for ``Experiment.progress`` that forwards to a display callback.

    Streamlit elements may only be touched from the script thread, and engine bars
    could be updated from worker threads; so only the thread that created the
    reporter calls ``show``. Other threads just count, and their updates appear
    at the next update from the script thread or at ``close``.
    """

    def __init__(self, show: Callable[[str, int, int], None],
                 finished: Callable[[str, int, int, float], None] | None = None, min_step: float = 0.01):
        self.show = show  # show(desc, done, total)
        self.finished = finished  # finished(desc, done, total, seconds)
        self.min_step = min_step  # redraw at most every 1% so a run does not flood the browser
        self.owner = threading.get_ident()

    def __call__(self, total: int | None = None, desc: str = "", **_: Any) -> ProgressBar:
        return ProgressBar(self, int(total or 0), desc)


class ProgressBar:
    def __init__(self, reporter: ProgressReporter, total: int, desc: str):
        self.reporter, self.total, self.desc = reporter, total, desc
        self.done, self.shown = 0, -1.0
        self.started = time.perf_counter()
        self.lock = threading.Lock()
        self._draw(force=True)

    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 1.0

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
        self._draw()

    def close(self) -> None:
        if self._draw(force=True) and self.reporter.finished:
            self.reporter.finished(self.desc, self.done, self.total, time.perf_counter() - self.started)

    def _draw(self, force: bool = False) -> bool:
        """Show the state if on the script thread and it moved enough; True when on that thread."""
        if threading.get_ident() != self.reporter.owner:
            return False
        fraction = self.fraction()
        if force or fraction >= 1.0 or fraction - self.shown >= self.reporter.min_step:
            self.shown = fraction
            self.reporter.show(self.desc, self.done, self.total)
        return True


def progress_text(desc: str, done: int, total: int) -> str:
    return f"{desc}: {done}/{total}" if total else desc


# -- uploads ----------------------------------------------------------------------------------
@dataclass
class SavedUploads:
    folder: Path | None  # the dataset folder (flat layout), None when nothing usable was uploaded
    saved: list[str]
    skipped: pd.DataFrame  # path, reason


def uploads_digest(files: Sequence[tuple[str, bytes]]) -> str:
    """Key of an upload set: names and bytes, independent of upload order."""
    parts = sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files)
    return cache.fingerprint(parts)


def safe_file_name(name: str, taken: set[str]) -> str:
    """The upload's base name with only safe characters, unique within ``taken``."""
    path = Path(Path(name).name)
    stem = re.sub(r"[^\w.-]+", "-", path.stem, flags=re.ASCII).strip("-.") or "image"
    return unique_name(stem, path.suffix.lower(), taken)


def check_upload(name: str, data: bytes, max_mb: int = MAX_UPLOAD_MB) -> Image.Image:
    """Decode one uploaded file or raise ``BadImage`` with the reason."""
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise BadImage(f"not an image file type ('{suffix or 'no suffix'}'; allowed: {', '.join(UPLOAD_TYPES)})")
    if len(data) > max_mb * 2**20:
        raise BadImage(f"larger than {max_mb} MB")
    return load_rgb(data)


def save_uploads(files: Sequence[tuple[str, bytes]], cache_root: Path | str) -> SavedUploads:
    """Save uploaded images as a flat dataset under ``cache_root/uploads/<digest>/images``.

    The folder is keyed by the uploaded bytes, so re-running with the same upload
    reuses it (and the experiment cache keyed by it); bad files are skipped with a reason.
    """
    folder = Path(cache_root) / "uploads" / uploads_digest(files)
    if not cache.is_complete(folder):
        with cache.building(folder) as tmp:
            _write_uploads(files, tmp)
    saved = cache.read_json(folder / "saved.json")
    skipped = pd.DataFrame(cache.read_json(folder / "skipped.json"), columns=["path", "reason"])
    return SavedUploads(folder / "images" if saved else None, saved, skipped)


def _write_uploads(files: Sequence[tuple[str, bytes]], tmp: Path) -> None:
    taken: set[str] = set()
    saved, skipped = [], []
    (tmp / "images").mkdir()
    for name, data in files:
        try:
            check_upload(name, data)
        except BadImage as err:
            skipped.append({"path": name, "reason": str(err)})
            continue
        target = safe_file_name(name, taken)
        (tmp / "images" / target).write_bytes(data)
        saved.append(target)
    cache.write_json(tmp / "saved.json", saved)
    cache.write_json(tmp / "skipped.json", skipped)


# -- images -----------------------------------------------------------------------------------
def thumbnail_jpeg(path: str | Path, px: int = THUMB_PX) -> bytes:
    """A small JPEG of an image file (for galleries; the full image is never sent)."""
    return image_thumbnail(load_rgb(Path(path)), px)


def preview_jpeg(data: bytes, px: int = 320) -> bytes:
    """A display-sized JPEG of an image file's bytes."""
    return image_thumbnail(load_rgb(data), px)


def image_thumbnail(img: Image.Image, px: int = THUMB_PX) -> bytes:
    small = img.copy()
    small.thumbnail((px, px), Image.Resampling.LANCZOS)
    return encode_jpeg(small, 85)


@dataclass
class Thumb:
    path: Path
    caption: str
    is_true: bool = False


# -- overview ---------------------------------------------------------------------------------
def headline_tables(recall: pd.DataFrame, labels: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Instance and class Recall@K in the reference format: rows K, one column per method."""
    return {level: report.wide(recall, level, labels) for level in LEVELS}


def published_tables() -> dict[str, pd.DataFrame]:
    return headline_tables(report.reference_recall(), report.REFERENCE_LABELS)


def with_labels(table: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    return table.assign(label=table["method"].map(labels).fillna(table["method"]))


def recall_curve_chart(recall: pd.DataFrame, labels: dict[str, str], title: str = "Recall@K vs K") -> alt.Chart:
    """One line per method and level: colour = method, dash = level."""
    data = with_labels(recall, labels)
    return alt.Chart(data, title=title).mark_line(point=True).encode(
        x=alt.X("k:Q", title="K"),
        y=alt.Y("recall:Q", title="Recall@K", scale=alt.Scale(zero=False)),
        color=alt.Color("label:N", title="method"),
        strokeDash=alt.StrokeDash("level:N", title="level"),
        tooltip=["label:N", "level:N", "k:Q", alt.Tooltip("recall:Q", format=".4f")],
    )


def cnn_caption(methods: Sequence[str]) -> str:
    if "resnet50" in methods:
        return "The CNN in this experiment is ResNet-50, as in the reference experiment."
    if "efficientnet_lite2" in methods:
        return ("The CNN in this experiment is EfficientNet-Lite2, not ResNet-50: "
                "compare it with the published ResNet-50 numbers with care.")
    return "No CNN is selected in this experiment."


def dataset_summary(exp: Experiment, source: str, extra_skipped: int = 0) -> pd.DataFrame:
    cfg, manifest = exp.config, exp.manifest
    per_original = manifest.groupby("source").size()
    rows = [
        ("Data source", source),
        ("Folder", str(exp.data_root)),
        ("Originals", len(exp.originals)),
        ("Classes", exp.originals["class"].nunique()),
        ("Modified copies (queries)", len(manifest)),
        ("Copies per original", f"drawn from {', '.join(map(str, cfg.augment.copies))} "
                                f"(mean {per_original.mean():.2f})"),
        ("Ops per copy (chain length)", cfg.augment.describe()),
        ("Ops", ", ".join(cfg.augment.ops)),
        ("Seed", cfg.seed),
        ("Methods", ", ".join(exp.methods)),
        ("Skipped files", len(exp.skipped) + extra_skipped),
        ("Cache", str(exp.root)),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})


def versus_published(recall: pd.DataFrame, methods: Sequence[str], labels: dict[str, str]) -> pd.DataFrame:
    """Measured next to published: the CNN here against ResNet-50, pHash against pHash."""
    cnn = "resnet50" if "resnet50" in methods else "efficientnet_lite2"
    pairs = {m: ref for m, ref in ((cnn, "resnet50"), ("phash", "phash")) if m in methods}
    table = report.versus_reference(recall, pairs)
    return table.assign(method=table["method"].map(labels),
                        reference_method=table["reference_method"].map(report.REFERENCE_LABELS))


def all_skipped(exp: Experiment, upload_skipped: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([upload_skipped, exp.skipped], ignore_index=True)[["path", "reason"]]


def costs_table(results: Results) -> pd.DataFrame:
    costs = results.costs()
    return pd.DataFrame({
        "method": costs["label"],
        "dimensions": costs["dim"],
        "metric": costs["metric"].map({"ip": "cosine similarity", "hamming": "Hamming distance"}),
        "images/s to encode": costs["images_per_s"],
        "ms per query": costs["ms_per_query"],
        "top-1 tie rate": costs["top1_tie_rate"],
        "R@1 if ties won": costs["r1_ties_won"],
        "R@1 if ties lost": costs["r1_ties_lost"],
    })


# -- per transformation -----------------------------------------------------------------------
def op_title(op: str) -> str:
    return f"{op} ({OPS[op].label})" if op in OPS else op


def level_slice(table: pd.DataFrame, k: int, level: str) -> pd.DataFrame:
    return table[(table["k"] == k) & (table["level"] == level)]


def recall_table(results: Results, ks: Sequence[int]) -> pd.DataFrame:
    return results.recall(list(ks))


def per_op_wide(per_op: pd.DataFrame, k: int, level: str, labels: dict[str, str]) -> pd.DataFrame:
    """Rows ops (hardest first by mean over methods), columns methods, plus the query count."""
    part = with_labels(level_slice(per_op, k, level), labels)
    table = part.pivot(index="op", columns="label", values="recall")[list(dict.fromkeys(part["label"]))]
    table["queries"] = part.groupby("op")["n"].first()
    table = table.loc[table.drop(columns="queries").mean(axis=1).sort_values().index]
    table.index = [op_title(op) for op in table.index]
    table.index.name = f"{level} Recall@{k} by op"
    return table


def op_heatmap(per_op: pd.DataFrame, k: int, level: str, labels: dict[str, str]) -> alt.LayerChart:
    """op × method, colour = recall, with the value written in each cell; hardest ops on top."""
    data = with_labels(level_slice(per_op, k, level), labels).assign(op_title=lambda d: d["op"].map(op_title))
    order = data.groupby("op_title")["recall"].mean().sort_values().index.tolist()
    base = alt.Chart(data, title=f"{level} Recall@{k} per op").encode(
        x=alt.X("label:N", title="method", axis=alt.Axis(labelAngle=0, labelLimit=400)),
        y=alt.Y("op_title:N", title="op in the chain", sort=order, axis=alt.Axis(labelLimit=250)))
    cells = base.mark_rect().encode(
        color=alt.Color("recall:Q", title=f"Recall@{k}", scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1])),
        tooltip=["op_title:N", "label:N", alt.Tooltip("recall:Q", format=".4f"), alt.Tooltip("n:Q", title="queries")])
    text = base.mark_text(fontSize=13).encode(
        text=alt.Text("recall:Q", format=".2f"),
        color=alt.condition("datum.recall > 0.3 && datum.recall < 0.8", alt.value("black"), alt.value("white")))
    return alt.layer(cells, text)


def hardest_ops(per_op: pd.DataFrame, k: int, level: str) -> pd.DataFrame:
    """Per method, the op whose queries have the lowest Recall@K."""
    part = level_slice(per_op, k, level).sort_values(["recall", "op"])
    return part.groupby("method", sort=False).head(1).reset_index(drop=True)


def hardest_op_sentences(per_op: pd.DataFrame, k: int, level: str, labels: dict[str, str]) -> list[str]:
    return [f"Hardest op for **{labels.get(row.method, row.method)}**: **{op_title(row.op)}**, "
            f"{level} Recall@{k} = {row.recall:.4f} over {row.n} queries containing it."
            for row in hardest_ops(per_op, k, level).itertuples()]


def chain_length_chart(by_length: pd.DataFrame, k: int, level: str, labels: dict[str, str]) -> alt.Chart:
    data = with_labels(level_slice(by_length, k, level), labels)
    return alt.Chart(data, title=f"{level} Recall@{k} by number of ops").mark_line(point=True).encode(
        x=alt.X("chain_length:O", title="ops in the chain"),
        y=alt.Y("recall:Q", title=f"Recall@{k}", scale=alt.Scale(zero=False)),
        color=alt.Color("label:N", title="method"),
        tooltip=["label:N", "chain_length:O", alt.Tooltip("recall:Q", format=".4f"),
                 alt.Tooltip("n:Q", title="queries")],
    )


def chain_length_wide(by_length: pd.DataFrame, k: int, level: str, labels: dict[str, str]) -> pd.DataFrame:
    part = with_labels(level_slice(by_length, k, level), labels)
    table = part.pivot(index="chain_length", columns="label", values="recall")[list(dict.fromkeys(part["label"]))]
    table["queries"] = part.groupby("chain_length")["n"].first()
    table.index.name = "ops in the chain"
    return table


@dataclass
class Breakdown:
    """Everything the per-transformation page shows for one op filter and one K."""

    n_queries: int  # per method, after the filter
    recall: pd.DataFrame  # method, level, k, recall, n
    per_op: pd.DataFrame  # op, method, level, k, recall, n
    by_length: pd.DataFrame  # chain_length, method, level, k, recall, n


def breakdown(results: Results, include: Sequence[str], exclude: Sequence[str], k: int) -> Breakdown | None:
    """Recall@K overall, per op and per chain length over the filtered queries; None if none match."""
    kept = evaluate.filter_by_ops(results.per_query, include, exclude)
    if kept.empty:
        return None
    return Breakdown(int(kept.groupby("method").size().max()), evaluate.recall_at_k(kept, [k]),
                     evaluate.per_op_recall(kept, [k]), evaluate.recall_by_chain_length(kept, [k]))


def recall_at_k_wide(recall: pd.DataFrame, k: int, labels: dict[str, str]) -> pd.DataFrame:
    """Rows methods, columns levels: one K at a glance."""
    part = with_labels(recall[recall["k"] == k], labels)
    table = part.pivot(index="label", columns="level", values="recall")[list(LEVELS)]
    table.columns = [f"{level} Recall@{k}" for level in table.columns]
    table.index.name = "method"
    return table.loc[list(dict.fromkeys(part["label"]))]


# -- method comparison ------------------------------------------------------------------------
AGREEMENT_CELLS = ("both", "only_a", "only_b", "neither")


def default_pair(methods: Sequence[str]) -> tuple[str, str]:
    """The CNN against pHash when both are there, else the first two methods."""
    cnn = next((m for m in ("resnet50", "efficientnet_lite2") if m in methods), methods[0])
    other = "phash" if "phash" in methods and cnn != "phash" else next(m for m in methods if m != cnn)
    return cnn, other


def hits(per_query: pd.DataFrame, method: str, k: int, level: str) -> pd.Series:
    """Whether each query (index: query file) hits at K for one method."""
    return evaluate.hit_at_k(per_query[per_query["method"] == method].set_index("query"), k, level)


def agreement_table(per_query: pd.DataFrame, a: str, b: str, k: int, level: str) -> pd.DataFrame:
    """One row per query: whether A and B hit at K, and which agreement cell that is."""
    base = per_query[per_query["method"] == a].set_index("query")[["source", "ops"]]
    table = base.assign(hit_a=hits(per_query, a, k, level), hit_b=hits(per_query, b, k, level))
    cells = np.select([table.hit_a & table.hit_b, table.hit_a, table.hit_b], AGREEMENT_CELLS[:3], "neither")
    return table.assign(cell=cells).reset_index()


def agreement_for(results: Results, a: str, b: str, k: int, level: str) -> pd.DataFrame:
    return agreement_table(results.per_query, a, b, k, level)


def agreement_counts(table: pd.DataFrame) -> dict[str, int]:
    counts = table["cell"].value_counts()
    return {cell: int(counts.get(cell, 0)) for cell in AGREEMENT_CELLS}


def agreement_matrix(table: pd.DataFrame, label_a: str, label_b: str) -> pd.DataFrame:
    """2 × 2 counts: rows A hit / A missed, columns B hit / B missed."""
    counts = agreement_counts(table)
    return pd.DataFrame(
        [[counts["both"], counts["only_a"]], [counts["only_b"], counts["neither"]]],
        index=[f"{label_a} hit", f"{label_a} missed"], columns=[f"{label_b} hit", f"{label_b} missed"])


def cell_title(cell: str, label_a: str, label_b: str) -> str:
    return {"both": "both hit", "only_a": f"only {label_a}", "only_b": f"only {label_b}",
            "neither": "neither"}[cell]


def query_and_original_thumbs(exp: Experiment, rows: pd.DataFrame) -> list[Thumb]:
    """Each query's thumbnail followed by its true original's."""
    thumbs = []
    for row in rows.itertuples():
        thumbs += [Thumb(exp.copies_dir / row.query, f"query {row.query}"),
                   Thumb(exp.originals_dir / row.source, f"✅ true original {row.source}", True)]
    return thumbs


def score_chart(per_query: pd.DataFrame, method: str, label: str, score_name: str,
                higher_is_better: bool) -> alt.Chart:
    """Histograms of the true original's score and the best wrong original's score."""
    part = per_query[per_query["method"] == method]
    data = pd.concat([
        pd.DataFrame({"score": part["true_score"], "kind": "true original"}),
        pd.DataFrame({"score": part["best_wrong_score"], "kind": "best wrong original"}),
    ], ignore_index=True).dropna()
    better = "higher" if higher_is_better else "lower"
    return alt.Chart(data, title=f"{label}: {score_name} ({better} = more similar)").mark_bar(
        opacity=0.55, binSpacing=0).encode(
        x=alt.X("score:Q", bin=alt.Bin(maxbins=40), title=score_name),
        y=alt.Y("count():Q", stack=None, title="queries"),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["true original", "best wrong original"],
                                                              range=["#2ca02c", "#d62728"])),
    )


def separation_rate(per_query: pd.DataFrame, method: str, higher_is_better: bool) -> float:
    """Share of queries whose true original scores strictly better than every wrong one."""
    part = per_query[per_query["method"] == method]
    diff = part["true_score"] - part["best_wrong_score"]
    return float((diff > 0).mean() if higher_is_better else (diff < 0).mean())


def pair_recall(results_recall: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    return results_recall[results_recall["method"].isin(list(methods))]


# -- failures ---------------------------------------------------------------------------------
def failures(per_query: pd.DataFrame, method: str, include_ops: Sequence[str] = ()) -> pd.DataFrame:
    """Queries whose true original is not top-1 for ``method``, worst rank first.

    A rank beyond the search depth (NA) counts as the worst.
    """
    part = evaluate.filter_by_ops(per_query[per_query["method"] == method], include_ops)
    failed = part[~evaluate.hit_at_k(part, 1).to_numpy()]
    return failed.sort_values(["rank", "query"], ascending=[False, True], na_position="first").reset_index(drop=True)


def failures_for(results: Results, method: str, include_ops: Sequence[str]) -> pd.DataFrame:
    return failures(results.per_query, method, include_ops)


def n_pages(n_items: int, per_page: int) -> int:
    return max(1, -(-n_items // per_page))


def page_rows(table: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Rows of 1-based ``page``."""
    start = (page - 1) * per_page
    return table.iloc[start:start + per_page]


def manifest_positions(exp: Experiment, query_files: Sequence[str]) -> np.ndarray:
    """Row of each query in the manifest (and so in exp.neighbours)."""
    return pd.Index(exp.manifest["file"]).get_indexer(list(query_files))


def neighbour_thumbs(exp: Experiment, ids: np.ndarray, scores: np.ndarray, source: str,
                     score_name: str) -> list[Thumb]:
    files = exp.originals["file"].to_numpy()
    thumbs = []
    for rank, (i, score) in enumerate(zip(ids, scores), start=1):
        file = files[i]
        mark = "✅ true original · " if file == source else ""
        thumbs.append(Thumb(exp.originals_dir / file, f"{mark}#{rank} {file} · {score_name} {score:.4g}",
                            file == source))
    return thumbs


@dataclass
class FailureCard:
    query: str
    query_path: Path
    source_path: Path
    rank: int | None
    chain: str
    neighbours: list[Thumb] = field(default_factory=list)


def failure_cards(exp: Experiment, rows: pd.DataFrame, neighbour_ids: np.ndarray, neighbour_scores: np.ndarray,
                  score_name: str, top: int = 3) -> list[FailureCard]:
    """Everything the gallery shows for each failed query: images, chain and retrieved top-``top``."""
    positions = manifest_positions(exp, rows["query"])
    chains = exp.manifest["chain"].to_numpy()
    cards = []
    for row, pos in zip(rows.itertuples(), positions):
        rank = None if pd.isna(row.rank) else int(row.rank)
        cards.append(FailureCard(
            query=row.query, query_path=exp.copies_dir / row.query, source_path=exp.originals_dir / row.source,
            rank=rank, chain=describe_chain(chain_from_json(chains[pos])),
            neighbours=neighbour_thumbs(exp, neighbour_ids[pos, :top], neighbour_scores[pos, :top], row.source,
                                        score_name)))
    return cards


# -- augmentation lab and search --------------------------------------------------------------
@dataclass(frozen=True)
class Control:
    """How to draw a ParamSpec as a widget: a slider (int/float) or a select box (choice)."""

    widget: str  # "slider" | "selectbox"
    default: Any
    low: Any = None
    high: Any = None
    step: Any = None
    options: tuple = ()


def control_for(spec: ParamSpec) -> Control:
    if spec.kind == "choice":
        return Control("selectbox", spec.default, options=tuple(spec.choices))
    if spec.kind == "int":
        return Control("slider", int(spec.default), int(spec.low), int(spec.high), 1)
    span = float(spec.high) - float(spec.low)
    return Control("slider", float(spec.default), float(spec.low), float(spec.high), 0.01 if span <= 2 else 0.1)


def param_key(op: str, name: str) -> str:
    return f"lab_param_{op}_{name}"


def roll_params(ops: Sequence[str], size: tuple[int, int], rng: np.random.Generator) -> dict[str, dict]:
    """Random parameters for a chain, each op sampled against the size it will see."""
    params = {}
    for name in ops:
        op = OPS[name]
        params[name] = op.make_params(rng, size)
        size = op.output_size(size, params[name])
    return params


def fit_to_control(value: Any, control: Control) -> Any:
    """Snap a sampled value onto its widget's grid, so a rolled value is exactly what is applied."""
    if control.widget == "selectbox":
        return value
    if isinstance(control.step, int):
        return int(value)
    snapped = round(round(float(value) / control.step) * control.step, 4)
    return min(max(snapped, control.low), control.high)


def build_chain(ops: Sequence[str], params: dict[str, dict]) -> list[Step]:
    return [Step(op, dict(params.get(op) or OPS[op].default_params())) for op in ops]


def chain_json(ops: Sequence[str], params: dict[str, dict]) -> str:
    """The chain as the manifest stores it: a hashable cache key and a replayable record."""
    return chain_to_json(build_chain(ops, params))


@dataclass
class Ranking:
    method: str
    rank: int | None  # of the true original, 1-based; None when not asked or not found
    table: pd.DataFrame  # rank, file, class, score, is_true (top rows)


def rank_image(exp: Experiment, method: str, img: Image.Image, source: str | None, top: int) -> Ranking:
    """Search one image against every original; where ``source`` ranks and the first ``top`` hits."""
    found = exp.query(method, [img], k=len(exp.originals))
    files = exp.originals["file"].to_numpy()[found.ids[0]]
    table = pd.DataFrame({"rank": np.arange(1, len(files) + 1), "file": files,
                          "class": exp.originals["class"].to_numpy()[found.ids[0]],
                          "score": found.scores[0].astype(float), "is_true": files == source})
    position = np.flatnonzero(table["is_true"].to_numpy())
    rank = int(position[0]) + 1 if len(position) else None
    return Ranking(method, rank, table.head(top))


def lab_modify(original_path: Path, chain_json: str) -> bytes:
    """Apply a chain and store it like the experiment stores copies (JPEG), so what is
    shown, searched and downloaded is the same image."""
    return encode_jpeg(apply_chain(load_rgb(original_path), chain_from_json(chain_json)), COPY_JPEG_QUALITY)


def lab_rankings(results: Results, original: str, chain_json: str, top: int = 5) -> tuple[bytes, list[Ranking]]:
    exp = results.experiment
    modified = lab_modify(exp.originals_dir / original, chain_json)
    img = load_rgb(modified)
    return modified, [rank_image(exp, m, img, original, top) for m in results.methods]


def ranking_thumbs(exp: Experiment, ranking: Ranking, score_name: str) -> list[Thumb]:
    table = ranking.table
    return neighbour_thumbs(exp, pd.Index(exp.originals["file"]).get_indexer(table["file"]),
                            table["score"].to_numpy(), _true_file(table), score_name)


def _true_file(table: pd.DataFrame) -> str | None:
    true = table.loc[table["is_true"], "file"]
    return true.iloc[0] if len(true) else None


def search_rankings(results: Results, image_bytes: bytes, source: str | None, top: int) -> list[Ranking]:
    """Top-``top`` originals for an image file's bytes, per method (``source``: the known original, if any)."""
    img = load_rgb(image_bytes)
    return [rank_image(results.experiment, m, img, source, top) for m in results.methods]


def original_labels(originals: pd.DataFrame) -> dict[str, str]:
    return {file: f"{file} (class {label})" for file, label in zip(originals["file"], originals["class"])}


# -- Streamlit glue (imports streamlit lazily) -------------------------------------------------
@functools.cache
def st_cache_data(func: Callable) -> Callable:
    """``st.cache_data`` applied on first use, so this module imports without Streamlit.
    Streamlit keys a cache by the function's module, name and source, so the wrapper is stable."""
    import streamlit as st

    return st.cache_data(show_spinner=False, max_entries=512)(func)


@functools.cache
def st_cache_resource(func: Callable) -> Callable:
    import streamlit as st

    return st.cache_resource(show_spinner=False)(func)


def thumbnail(path: Path | str) -> bytes:
    return st_cache_data(thumbnail_jpeg)(str(path))


def _cached_result(key: str, name: str, args: tuple, _func: Callable, _results: Results) -> Any:
    return _func(_results, *args)


@dataclass
class AppContext:
    """What the frame hands to every page: the loaded experiment and its results."""

    key: str
    source: str
    experiment: Experiment
    results: Results
    upload_skipped: pd.DataFrame

    @property
    def methods(self) -> list[str]:
        return self.results.methods

    @property
    def labels(self) -> dict[str, str]:
        return self.cached(lambda results: results.labels, name="labels")

    def cached(self, func: Callable, *args: Any, name: str | None = None) -> Any:
        """``func(results, *args)`` through st.cache_data, keyed by experiment, function and args."""
        return st_cache_data(_cached_result)(self.key, name or func.__qualname__, args, _func=func,
                                             _results=self.results)

    def score_info(self, method: str) -> tuple[str, bool]:
        desc = self.experiment.descriptor(method)
        return desc.score_name, desc.higher_is_better

    def neighbours(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        return self.cached(lambda results, m: results.experiment.neighbours(m), method, name="neighbours")


def open_experiment(key: str, cache_root: str) -> tuple[Experiment, list[str]]:
    """The engine handle for a config (cheap: stages run lazily); returns it with its log."""
    notices: list[str] = []
    return Experiment(config_from_key(key), cache_root, log=notices.append), notices


def experiment_handle(key: str, cache_root: str) -> tuple[Experiment, list[str]]:
    return st_cache_resource(open_experiment)(key, cache_root)


def _results_store() -> dict:
    return {"lock": threading.Lock()}


def results_store() -> dict:
    """Process-wide {(key, cache root): Results}, plus a lock so one session builds at a time."""
    return st_cache_resource(_results_store)()


def set_context(ctx: AppContext) -> None:
    import streamlit as st

    st.session_state[CONTEXT_KEY] = ctx


def context() -> AppContext:
    """The experiment the frame loaded in this run (pages run after the frame)."""
    import streamlit as st

    return st.session_state[CONTEXT_KEY]


def thumbnail_grid(thumbs: Sequence[Thumb], columns: int = 5) -> None:
    import streamlit as st

    for start in range(0, len(thumbs), columns):
        for col, thumb in zip(st.columns(columns), thumbs[start:start + columns]):
            # A fixed width: with "content" width a long caption would stretch its image.
            col.image(thumbnail(thumb.path), caption=thumb.caption, width=THUMB_PX)


def set_state(key: str, value: Any) -> None:
    """Widget callback: put ``value`` into another widget's state (e.g. a thumbnail's "Use" button)."""
    import streamlit as st

    st.session_state[key] = value


def param_widget(container: Any, op: str, spec: ParamSpec) -> Any:
    """One parameter's widget; its value lives in session state under param_key(op, name)."""
    import streamlit as st

    key, control = param_key(op, spec.name), control_for(spec)
    if key not in st.session_state:
        st.session_state[key] = control.default
    if control.widget == "selectbox":
        return container.selectbox(spec.name, control.options, key=key, help=spec.help)
    return container.slider(spec.name, control.low, control.high, step=control.step, key=key, help=spec.help)


def roll_into_state(ops: Sequence[str], size: tuple[int, int]) -> None:
    """Button callback: fresh random parameters for the chosen ops, written into their widgets."""
    import streamlit as st

    rolled = roll_params(ops, size, np.random.default_rng())
    for op, params in rolled.items():
        for spec in OPS[op].params:
            st.session_state[param_key(op, spec.name)] = fit_to_control(params[spec.name], control_for(spec))


def params_from_state(ops: Sequence[str]) -> dict[str, dict]:
    import streamlit as st

    return {op: {spec.name: st.session_state.get(param_key(op, spec.name), spec.default) for spec in OPS[op].params}
            for op in ops}



def number_columns(table: pd.DataFrame, fmt: str = "%.4f") -> dict:
    """column_config showing every float column with ``fmt`` (the reference tables use 4 decimals)."""
    import streamlit as st

    return {c: st.column_config.NumberColumn(format=fmt) for c in table.columns
            if pd.api.types.is_float_dtype(table[c])}


def show_table(table: pd.DataFrame, key: str, fmt: str = "%.4f", **options: Any) -> None:
    import streamlit as st

    st.dataframe(table, column_config=number_columns(table, fmt), key=key, **options)

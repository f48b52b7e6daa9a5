"""Run the five stages in order, caching each on disk.

Cache layout (``root`` is ``~/.cache/malle`` unless ``MALLE_CACHE`` or an
argument says otherwise); each folder is keyed by a fingerprint of everything
upstream of it, so a second identical run reuses all of them and changing one
method recomputes only that method's folders::

    samples/<key>/   originals/*.JPEG  originals.parquet  skipped.csv
    copies/<key>/    images/*.JPEG     manifest.parquet
    embed/<key>/     originals.npy  queries.npy  index.faiss   (one per method)
    search/<key>/    per_query.parquet  neighbour_ids.npy  neighbour_scores.npy
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import cache, evaluate
from .augment import AugmentConfig, make_copies
from .descriptors import Descriptor, create_descriptor, resolve_methods
from .sampling import DatasetError, dataset_fingerprint, demo_root, discover, select, write_originals
from .search import Hits, build_index, load_index, pair_scores, save_index, search

# Bump one when its stage's output changes for the same inputs.
STAGE_VERSIONS = {"samples": 1, "copies": 1, "embed": 1, "search": 2}
NEIGHBOURS_KEPT = 20  # top-N neighbours stored per query for the dashboard
Progress = Callable[..., object]  # tqdm-like: progress(total=, desc=) -> obj with update(n), close()


@dataclass(frozen=True)
class ExperimentConfig:
    data: str | None = None  # None: the built-in demo photos
    n: int = 200
    seed: int = 0
    n_classes: int = 20
    methods: tuple[str, ...] | None = None  # None: the defaults (see descriptors.resolve_methods)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ks: tuple[int, ...] = evaluate.KS
    resnet50_weights: str | None = None
    depth: int = 1000  # ranks beyond this are reported as missing

    def as_dict(self) -> dict:
        out = asdict(self)
        out["augment"] = self.augment.as_dict()
        return out


@dataclass
class Stage:
    folder: Path
    meta: dict
    cached: bool


class Experiment:
    """The cached engine. Stages run lazily; ``run()`` runs them all."""

    def __init__(self, config: ExperimentConfig, cache_root: Path | str | None = None,
                 progress: Progress | None = None, log: Callable[[str], None] | None = None):
        self.config = config
        self.root = Path(cache_root) if cache_root else cache.default_root()
        self.progress = progress
        self.log = log or (lambda message: None)
        self.data_root = Path(config.data).expanduser() if config.data else demo_root()
        self.methods, notices = resolve_methods(config.methods, config.resnet50_weights)
        for notice in notices:
            self.log(notice)
        self._descriptors: dict[str, Descriptor] = {}
        self._method_stages: dict[tuple[str, str], Stage] = {}  # what this run computed or found cached

    # -- plumbing ---------------------------------------------------------------------------
    def check(self) -> None:
        """Fail before any work if ResNet-50 was asked for and its weights cannot be had.

        Loads them into the descriptor the run then uses, so they are read once.
        """
        if "resnet50" in self.methods:
            self.descriptor("resnet50").load()

    def _stage(self, kind: str, key_parts: Sequence, build: Callable[[Path, dict], None]) -> Stage:
        key = cache.fingerprint(kind, STAGE_VERSIONS[kind], *key_parts)
        folder = self.root / kind / key
        cached = cache.is_complete(folder)
        if not cached:
            meta: dict = {}
            start = time.perf_counter()
            with cache.building(folder, meta) as tmp:
                build(tmp, meta)
                meta["seconds"] = time.perf_counter() - start
        return Stage(folder, cache.read_json(folder / cache.DONE_MARK), cached)

    def descriptor(self, method: str) -> Descriptor:
        if method not in self._descriptors:
            options = {"weights": self.config.resnet50_weights} if method == "resnet50" else {}
            self._descriptors[method] = create_descriptor(method, **options)
        return self._descriptors[method]

    # -- stage 1: originals ---------------------------------------------------------------
    @cached_property
    def samples(self) -> Stage:
        cfg = self.config
        candidates, passed_over = discover(self.data_root)

        def build(tmp: Path, meta: dict) -> None:
            picked, bad = select(candidates, cfg.n, cfg.n_classes, cfg.seed, self.progress)
            if not picked:
                raise DatasetError(f"no usable image in {self.data_root} ({len(bad)} files could not be read)")
            originals = write_originals(picked, tmp / "originals")
            cache.write_table(tmp / "originals.parquet", originals)
            cache.write_table(tmp / "skipped.csv", pd.DataFrame(passed_over + bad, columns=["path", "reason"]))
            meta.update(items=len(originals), dataset=str(self.data_root))

        key = (dataset_fingerprint(candidates, self.data_root), cfg.n, cfg.seed, cfg.n_classes)
        stage = self._stage("samples", key, build)
        if stage.meta["items"] < cfg.n:
            self.log(f"The dataset has only {stage.meta['items']} usable images (asked for {cfg.n}); using them all.")
        return stage

    @cached_property
    def originals(self) -> pd.DataFrame:
        """The database, in id order (sorted by file name)."""
        return cache.read_table(self.samples.folder / "originals.parquet")

    @cached_property
    def skipped(self) -> pd.DataFrame:
        return cache.read_table(self.samples.folder / "skipped.csv").astype(str)

    @property
    def originals_dir(self) -> Path:
        return self.samples.folder / "originals"

    # -- stage 2: modified copies ---------------------------------------------------------
    @cached_property
    def copies(self) -> Stage:
        cfg = self.config

        def build(tmp: Path, meta: dict) -> None:
            manifest = make_copies(self.originals, self.originals_dir, tmp / "images", cfg.augment, cfg.seed,
                                   self.progress)
            cache.write_table(tmp / "manifest.parquet", manifest)
            meta.update(items=len(manifest), chain_lengths=cfg.augment.describe())

        return self._stage("copies", (self.samples.folder.name, cfg.augment.as_dict(), cfg.seed), build)

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return cache.read_table(self.copies.folder / "manifest.parquet")

    @property
    def copies_dir(self) -> Path:
        return self.copies.folder / "images"

    # -- stage 3 and 4: descriptors and index ------------------------------------------------
    def _per_method(self, kind: str, method: str, compute: Callable[[str], Stage]) -> Stage:
        """A method's stage, computed or found in the cache once per experiment."""
        if (kind, method) not in self._method_stages:
            self._method_stages[kind, method] = compute(method)
        return self._method_stages[kind, method]

    def embedding(self, method: str) -> Stage:
        return self._per_method("embed", method, self._embed)

    def _embed(self, method: str) -> Stage:
        desc = self.descriptor(method)

        def build(tmp: Path, meta: dict) -> None:
            start = time.perf_counter()
            db = desc.encode_files([self.originals_dir / f for f in self.originals["file"]], progress=self.progress,
                                   desc=f"{desc.label}: originals")
            queries = desc.encode_files([self.copies_dir / f for f in self.manifest["file"]], progress=self.progress,
                                        desc=f"{desc.label}: copies")
            seconds = time.perf_counter() - start
            cache.write_npy(tmp / "originals.npy", db)
            cache.write_npy(tmp / "queries.npy", queries)
            save_index(build_index(db, desc.metric), tmp / "index.faiss")
            n = len(db) + len(queries)
            meta.update(method=method, label=desc.label, metric=desc.metric, dim=desc.dim, items=n,
                        encode_seconds=seconds, images_per_s=n / seconds if seconds else float("nan"))

        return self._stage("embed", (self.copies.folder.name, desc.fingerprint()), build)

    def codes(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        folder = self.embedding(method).folder
        return cache.read_npy(folder / "originals.npy"), cache.read_npy(folder / "queries.npy")

    def index(self, method: str):
        return load_index(self.embedding(method).folder / "index.faiss", self.descriptor(method).metric)

    def query(self, method: str, images: Sequence[Image.Image], k: int = 5) -> Hits:
        """Search new images (uploads, lab results) against a method's cached index."""
        desc = self.descriptor(method)
        return search(self.index(method), desc.encode(list(images)), k, desc.metric)

    # -- stage 4 and 5: search and per-query evaluation ----------------------------------------
    def evaluation(self, method: str) -> Stage:
        return self._per_method("search", method, self._evaluate)

    def _evaluate(self, method: str) -> Stage:
        embed = self.embedding(method)
        metric = self.descriptor(method).metric

        def build(tmp: Path, meta: dict) -> None:
            db, queries = self.codes(method)
            start = time.perf_counter()
            hits = search(self.index(method), queries, self.config.depth, metric)
            seconds = time.perf_counter() - start
            source_ids = pd.Index(self.originals["file"]).get_indexer(self.manifest["source"])
            true_scores = pair_scores(queries, db[source_ids], metric)
            table = evaluate.per_query_table(method, self.originals, self.manifest, hits, true_scores)
            cache.write_table(tmp / "per_query.parquet", table)
            cache.write_npy(tmp / "neighbour_ids.npy", hits.ids[:, :NEIGHBOURS_KEPT])
            cache.write_npy(tmp / "neighbour_scores.npy", hits.scores[:, :NEIGHBOURS_KEPT])
            meta.update(method=method, items=len(queries), search_seconds=seconds,
                        ms_per_query=1000 * seconds / max(len(queries), 1), tie_rate=float(hits.top1_tied.mean()))

        return self._stage("search", (embed.folder.name, self.config.depth), build)

    def neighbours(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Top-N database ids and scores per query (rows follow the manifest)."""
        folder = self.evaluation(method).folder
        return cache.read_npy(folder / "neighbour_ids.npy"), cache.read_npy(folder / "neighbour_scores.npy")

    def run(self) -> Results:
        self.check()
        per_query = [cache.read_table(self.evaluation(m).folder / "per_query.parquet") for m in self.methods]
        return Results(self, pd.concat(per_query, ignore_index=True))


class Results:
    """Everything the CLI and the dashboard show, derived from the cached per-query tables."""

    def __init__(self, experiment: Experiment, per_query: pd.DataFrame):
        self.experiment = experiment
        self.config = experiment.config
        self.methods = list(experiment.methods)
        self.per_query = per_query

    @property
    def labels(self) -> dict[str, str]:
        return {m: self.experiment.embedding(m).meta["label"] for m in self.methods}

    def recall(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.recall_at_k(self.per_query, ks or self.config.ks).drop(columns="n")

    def per_op(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.per_op_recall(self.per_query, ks or self.config.ks)

    def by_chain_length(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.recall_by_chain_length(self.per_query, ks or self.config.ks)

    def costs(self) -> pd.DataFrame:
        """Per method: encode throughput, search cost, top-1 tie rate and the Recall@1 range ties allow."""
        bounds = evaluate.recall1_tie_bounds(self.per_query)
        rows = []
        for m in self.methods:
            embed, found = self.experiment.embedding(m).meta, self.experiment.evaluation(m).meta
            rows.append({"method": m, "label": embed["label"], "dim": embed["dim"], "metric": embed["metric"],
                         "images_per_s": embed["images_per_s"], "ms_per_query": found["ms_per_query"],
                         "top1_tie_rate": found["tie_rate"], **bounds.loc[m].to_dict()})
        return pd.DataFrame(rows)

    def timings(self) -> pd.DataFrame:
        """Seconds per stage as first computed, and whether this run took it from the cache."""
        exp = self.experiment
        stages = [("samples", "", exp.samples), ("copies", "", exp.copies)]
        for m in self.methods:
            stages += [("embed", m, exp.embedding(m)), ("search", m, exp.evaluation(m))]
        return pd.DataFrame([{"stage": s, "method": m, "seconds": st.meta["seconds"], "items": st.meta["items"],
                              "cached": st.cached} for s, m, st in stages])

    def write(self, out: Path) -> list[Path]:
        """The CLI's output files."""
        out = Path(out)
        tables = {
            "recall.csv": self.recall(),
            "per_op.csv": self.per_op(),
            "by_chain_length.csv": self.by_chain_length(),
            "per_query.csv": self.per_query,
            "skipped.csv": self.experiment.skipped,
            "manifest.csv": self.experiment.manifest,
            "originals.csv": self.experiment.originals,
            "costs.csv": self.costs(),
            "timings.csv": self.timings(),
        }
        for name, table in tables.items():
            cache.write_table(out / name, table)
        cache.write_json(out / "config.json", {**self.config.as_dict(), "methods": self.methods,
                                               "data": str(self.experiment.data_root),
                                               "chain_lengths": self.config.augment.describe()})
        return [out / name for name in [*tables, "config.json"]]

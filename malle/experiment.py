"""Run the five stages in order, caching each on disk.

Cache layout (``root`` is ``~/.cache/malle`` unless ``MALLE_CACHE`` or an
argument says otherwise); each folder is keyed by a fingerprint of everything
upstream of it, so a second identical run reuses all of them and changing one
method recomputes only that method's folders::

    samples/<key>/   originals/*.JPEG  originals.parquet  skipped.csv
    copies/<key>/    images/*.JPEG     manifest.parquet
    embed/<key>/     originals.npy  queries.npy  index.faiss   (one per method)
    search/<key>/    per_query.parquet  neighbour_ids.npy  neighbour_scores.npy

Every key is computed before any stage runs (from the dataset's file list, the
configuration, the library versions that produce pixels, and each descriptor's
cheap fingerprint), so a fully cached run builds no model and reads no weights.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, features

from . import cache, evaluate
from .augment import AugmentConfig, make_copies
from .descriptors import Descriptor, Unavailable, create_descriptor, resolve_methods
from .descriptors.base import package_versions
from .errors import ConfigError, DatasetError
from .sampling import dataset_fingerprint, demo_root, discover, select, write_originals
from .search import Hits, best_pair_scores, save_index, search
from .tables import row_ids

# Bump one when its stage's output changes for the same inputs.
STAGE_VERSIONS = {"samples": 2, "copies": 2, "embed": 3, "search": 3}
NEIGHBOURS_KEPT = 20  # top-N neighbours stored per query for the dashboard
Progress = Callable[..., object]  # tqdm-like: progress(total=, desc=) -> obj with update(n), close()


def pixel_versions() -> dict[str, str]:
    """Libraries whose upgrade can change the pixels of originals and copies (decoders, encoders, ops, RNG)."""
    return {**package_versions(("Pillow", "torchvision", "torch", "numpy")), "libjpeg": str(features.version("jpg"))}


def quality_summary(desc: Descriptor, qualities: Sequence[np.ndarray | None], folder: Path) -> dict:
    """For methods with a quality score: store it and count the codes below the method's threshold."""
    kept = [q for q in qualities if q is not None]
    if not kept or desc.quality_threshold is None:
        return {}
    for name, quality in zip(("originals_quality.npy", "queries_quality.npy"), qualities):
        if quality is not None:
            cache.write_npy(folder / name, quality)
    everything = np.concatenate(kept)
    low = int((everything < desc.quality_threshold).sum())
    return {"low_quality": low, "low_quality_share": low / max(len(everything), 1),
            "quality_threshold": desc.quality_threshold}


@dataclass(frozen=True)
class ExperimentConfig:
    data: str | None = None  # None: the built-in demo photos
    n: int = 200
    seed: int = 0
    n_classes: int = 20
    methods: tuple[str, ...] | None = None  # None: the defaults (see descriptors.resolve_methods)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ks: tuple[int, ...] = evaluate.KS
    weights: tuple[tuple[str, str], ...] = ()  # (method, weights file) for descriptors that take one
    depth: int = 1000  # ranks beyond this are reported as missing

    def __post_init__(self):
        # Dicts and lists (from JSON or callers) become tuples so configs compare equal.
        object.__setattr__(self, "weights", tuple(sorted(dict(self.weights).items())))
        if self.methods is not None:
            object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "ks", tuple(self.ks))
        checks = [
            (self.data is None or str(self.data).strip() != "", "--data must name a folder (got an empty string)"),
            (self.n >= 1, f"--n must be at least 1 (got {self.n})"),
            (self.seed >= 0, f"--seed must be 0 or more (got {self.seed})"),
            (self.n_classes >= 0, f"--n-classes must be 0 or more (got {self.n_classes})"),
            (self.depth >= 1, f"depth must be at least 1 (got {self.depth})"),
            (all(k >= 1 for k in self.ks), f"every K must be at least 1 (got {self.ks})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def weights_for(self, method: str) -> str | None:
        return dict(self.weights).get(method)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["augment"] = self.augment.as_dict()
        out["weights"] = dict(self.weights)
        return out

    @classmethod
    def from_dict(cls, fields: Mapping) -> ExperimentConfig:
        fields = dict(fields)
        return cls(**{**fields, "augment": AugmentConfig(**fields["augment"])})


@dataclass
class Stage:
    folder: Path
    meta: dict
    cached: bool


class Experiment:
    """The cached engine. Stages run lazily, each at most once per experiment; ``run()`` runs them all.

    One instance may serve several threads (dashboard sessions): each stage is
    obtained under its own lock, so reading a finished stage never waits for
    another stage that is still being built.
    """

    def __init__(self, config: ExperimentConfig, cache_root: Path | str | None = None,
                 log: Callable[[str], None] | None = None, allowed_roots: Sequence[Path] | None = None):
        self.config = config
        self.root = Path(cache_root).expanduser() if cache_root else cache.default_root()
        self.log = log or (lambda message: None)
        self.data_root = Path(config.data).expanduser() if config.data else demo_root()
        self.allowed_roots = allowed_roots  # None: links may lead anywhere (the CLI's choice)
        self.methods, self.unavailable = resolve_methods(config.methods, dict(config.weights))
        for skipped in self.unavailable:
            self.log(skipped.notice())
        self._descriptors: dict[str, Descriptor] = {}
        self._stages: dict[tuple[str, str], Stage] = {}
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------
    def check(self) -> None:
        """Fail before any work if a method's weights cannot be had and a stage of it must be computed.

        Loads them into the descriptor the run then uses, so they are read once; a method
        whose embeddings are cached loads nothing.
        """
        for method in self.methods:
            if not (self.embed_folder(method) / cache.DONE_MARK).is_file():
                desc = self.descriptor(method)
                desc.load()
                for notice in desc.notices:
                    self.log(notice)

    def descriptor(self, method: str) -> Descriptor:
        if method not in self._descriptors:
            desc = create_descriptor(method, weights=self.config.weights_for(method))
            desc.use_cache(self.root)
            self._descriptors[method] = desc
        return self._descriptors[method]

    def _lock(self, kind: str, method: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[kind, method]

    def _obtain(self, kind: str, method: str, folder: Path, build: Callable[[Path, dict], None]) -> Stage:
        with self._lock(kind, method):
            if (kind, method) not in self._stages:
                found = cache.obtain(folder, build, self.log)
                self._stages[kind, method] = Stage(folder, found.meta, found.cached)
            return self._stages[kind, method]

    def _folder(self, kind: str, *key_parts) -> Path:
        return self.root / kind / cache.fingerprint(kind, STAGE_VERSIONS[kind], *key_parts)

    # -- cache keys, computed without running anything ----------------------------------------
    @cached_property
    def discovered(self):
        """(candidate images, files passed over) in the dataset folder."""
        return discover(self.data_root, self.allowed_roots)

    @cached_property
    def samples_folder(self) -> Path:
        cfg = self.config
        fingerprint = dataset_fingerprint(self.discovered[0])
        return self._folder("samples", fingerprint, cfg.n, cfg.seed, cfg.n_classes, pixel_versions())

    @cached_property
    def copies_folder(self) -> Path:
        return self._folder("copies", self.samples_folder.name, self.config.augment.as_dict(), self.config.seed,
                            pixel_versions())

    def embed_folder(self, method: str) -> Path:
        return self._folder("embed", self.copies_folder.name, self.descriptor(method).fingerprint())

    def search_folder(self, method: str) -> Path:
        return self._folder("search", self.embed_folder(method).name, self.config.depth)

    # -- stage 1: originals ---------------------------------------------------------------
    def samples(self, progress: Progress | None = None) -> Stage:
        cfg = self.config

        def build(tmp: Path, meta: dict) -> None:
            candidates, passed_over = self.discovered
            picked, bad = select(candidates, cfg.n, cfg.n_classes, cfg.seed, progress)
            if not picked:
                raise DatasetError(f"no usable image in {self.data_root} ({len(bad)} files could not be read)")
            originals = write_originals(picked, tmp / "originals")
            cache.write_table(tmp / "originals.parquet", originals)
            cache.write_table(tmp / "skipped.csv", pd.DataFrame(passed_over + bad, columns=["path", "reason"]))
            meta.update(items=len(originals), dataset=str(self.data_root))

        first = ("samples", "") not in self._stages
        stage = self._obtain("samples", "", self.samples_folder, build)
        if first and stage.meta["items"] < cfg.n:
            self.log(f"The dataset has only {stage.meta['items']} usable images (asked for {cfg.n}); using them all.")
        return stage

    @cached_property
    def originals(self) -> pd.DataFrame:
        """The database, in id order (sorted by file name)."""
        return cache.read_table(self.samples().folder / "originals.parquet")

    @cached_property
    def skipped(self) -> pd.DataFrame:
        """Files passed over, with paths relative to the dataset folder."""
        return cache.read_table(self.samples().folder / "skipped.csv").astype(str)

    @property
    def originals_dir(self) -> Path:
        return self.samples().folder / "originals"

    # -- stage 2: modified copies ---------------------------------------------------------
    def copies(self, progress: Progress | None = None) -> Stage:
        cfg = self.config

        def build(tmp: Path, meta: dict) -> None:
            manifest = make_copies(self.originals, self.originals_dir, tmp / "images", cfg.augment, cfg.seed,
                                   progress)
            cache.write_table(tmp / "manifest.parquet", manifest)
            meta.update(items=len(manifest), chain_lengths=cfg.augment.describe())

        self.samples(progress)
        return self._obtain("copies", "", self.copies_folder, build)

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return cache.read_table(self.copies().folder / "manifest.parquet")

    @property
    def copies_dir(self) -> Path:
        return self.copies().folder / "images"

    # -- stage 3 and 4: descriptors and index ------------------------------------------------
    def embedding(self, method: str, progress: Progress | None = None) -> Stage:
        desc = self.descriptor(method)

        def build(tmp: Path, meta: dict) -> None:
            start = time.perf_counter()
            db = desc.encode_files_scored([self.originals_dir / f for f in self.originals["file"]],
                                          progress=progress, desc=f"{desc.label}: originals")
            queries = desc.encode_files_scored([self.copies_dir / f for f in self.manifest["file"]],
                                               progress=progress, desc=f"{desc.label}: copies", queries=True)
            seconds = time.perf_counter() - start
            cache.write_npy(tmp / "originals.npy", db.codes)
            cache.write_npy(tmp / "queries.npy", queries.codes)
            save_index(desc.metric.build_index(db.codes), tmp / "index.faiss", desc.metric)
            n = len(db.codes) + len(queries.codes)
            meta.update(method=method, label=desc.label, family=desc.family, metric=desc.metric.name, dim=desc.dim,
                        precision=desc.precision, items=n, encode_seconds=seconds,
                        images_per_s=n / seconds if seconds else float("nan"),
                        **quality_summary(desc, [db.quality, queries.quality], tmp))

        self.copies(progress)
        return self._obtain("embed", method, self.embed_folder(method), build)

    def codes(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        folder = self.embedding(method).folder
        return cache.read_npy(folder / "originals.npy"), cache.read_npy(folder / "queries.npy")

    def index(self, method: str):
        return self.descriptor(method).metric.read_index(self.embedding(method).folder / "index.faiss")

    def query(self, method: str, images: Sequence[Image.Image], k: int = 5) -> Hits:
        """Search new images (uploads, lab results) against a method's cached index."""
        desc = self.descriptor(method)
        return search(self.index(method), desc.encode_queries(list(images)), k, desc.metric)

    # -- stage 4 and 5: search and per-query evaluation ----------------------------------------
    def evaluation(self, method: str, progress: Progress | None = None) -> Stage:
        metric = self.descriptor(method).metric

        def build(tmp: Path, meta: dict) -> None:
            db, queries = self.codes(method)
            start = time.perf_counter()
            hits = search(self.index(method), queries, self.config.depth, metric)
            seconds = time.perf_counter() - start
            true_scores = best_pair_scores(metric, queries, db[row_ids(self.originals["file"], self.manifest["source"])])
            table = evaluate.per_query_table(method, self.originals, self.manifest, hits, true_scores)
            cache.write_table(tmp / "per_query.parquet", table)
            cache.write_npy(tmp / "neighbour_ids.npy", hits.ids[:, :NEIGHBOURS_KEPT])
            cache.write_npy(tmp / "neighbour_scores.npy", hits.scores[:, :NEIGHBOURS_KEPT])
            meta.update(method=method, items=len(queries), search_seconds=seconds,
                        ms_per_query=1000 * seconds / max(len(queries), 1), tie_rate=float(hits.top1_tied.mean()))

        self.embedding(method, progress)
        return self._obtain("search", method, self.search_folder(method), build)

    def neighbours(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Top-N database ids and scores per query (rows follow the manifest)."""
        folder = self.evaluation(method).folder
        return cache.read_npy(folder / "neighbour_ids.npy"), cache.read_npy(folder / "neighbour_scores.npy")

    def run(self, progress: Progress | None = None) -> Results:
        """Every stage, computed or taken from the cache; ``progress`` reports the computed ones."""
        self.check()
        cache.sweep_leftovers(self.root)
        per_query = [cache.read_table(self.evaluation(m, progress).folder / "per_query.parquet")
                     for m in self.methods]
        return Results(self, pd.concat(per_query, ignore_index=True))


class Results:
    """Everything the CLI and the dashboard show, derived from the cached per-query tables."""

    def __init__(self, experiment: Experiment, per_query: pd.DataFrame):
        self.experiment = experiment
        self.config = experiment.config
        self.methods = list(experiment.methods)
        self.per_query = per_query

    @property
    def unavailable(self) -> list[Unavailable]:
        return self.experiment.unavailable

    @property
    def labels(self) -> dict[str, str]:
        return {m: self.experiment.embedding(m).meta["label"] for m in self.methods}

    def recall(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.recall_at_k(self.per_query, ks or self.config.ks).drop(columns="n")

    def per_op(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.per_op_recall(self.per_query, ks or self.config.ks)

    def by_chain_length(self, ks: Sequence[int] | None = None) -> pd.DataFrame:
        return evaluate.recall_by_chain_length(self.per_query, ks or self.config.ks)

    def methods_table(self) -> pd.DataFrame:
        """What each method is: label, family, precision, weights and their licence."""
        return pd.DataFrame([self.experiment.descriptor(m).provenance() for m in self.methods])

    def costs(self) -> pd.DataFrame:
        """Per method: encode throughput, search cost, top-1 tie rate and the Recall@1 range ties allow."""
        bounds = evaluate.recall1_tie_bounds(self.per_query)
        rows = []
        for m in self.methods:
            embed, found = self.experiment.embedding(m).meta, self.experiment.evaluation(m).meta
            rows.append({"method": m, "label": embed["label"], "family": embed["family"], "dim": embed["dim"],
                         "metric": embed["metric"], "precision": embed["precision"],
                         "images_per_s": embed["images_per_s"], "ms_per_query": found["ms_per_query"],
                         "top1_tie_rate": found["tie_rate"], **bounds.loc[m].to_dict(),
                         "low_quality_share": embed.get("low_quality_share", float("nan"))})
        return pd.DataFrame(rows)

    def timings(self) -> pd.DataFrame:
        """Seconds per stage as first computed, and whether this run took it from the cache."""
        exp = self.experiment
        stages = [("samples", "", exp.samples()), ("copies", "", exp.copies())]
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
            "methods.csv": self.methods_table(),
            "timings.csv": self.timings(),
        }
        for name, table in tables.items():
            cache.write_table(out / name, table)
        cache.write_json(out / "config.json", {**self.config.as_dict(), "methods": self.methods,
                                               "data": str(self.experiment.data_root),
                                               "chain_lengths": self.config.augment.describe(),
                                               "unavailable": [u.__dict__ for u in self.unavailable]})
        return [out / name for name in [*tables, "config.json"]]

"""Run the five stages in order, caching each on disk.

Cache layout (``root`` is ``~/.cache/malle`` unless ``MALLE_CACHE`` or an
argument says otherwise); each folder is keyed by a fingerprint of everything
upstream of it, so a second identical run reuses all of them and changing one
method recomputes only that method's folders::

    samples/<key>/   originals/*.JPEG  originals.parquet  skipped.csv
    copies/<key>/    images/*.JPEG     manifest.parquet
    embed/<key>/     originals.npy  queries.npy  index.faiss   (one per method)
    references/<key>/  references.parquet  codes.npy  skipped.csv   (extra database items, one per method)
    search/<key>/    index.faiss  per_query.parquet  neighbour_ids.npy  neighbour_scores.npy
    distractors/<key>/  images/*.JPEG  manifest.parquet  skipped.csv   (open-set queries)
    openset/<key>/   predictions.parquet  pr_curve.parquet  distractors.npy   (one per method)

Every key is computed before any stage runs (from the dataset's file list, the
configuration, the library versions that produce pixels, and each descriptor's
cheap fingerprint), so a fully cached run builds no model and reads no weights.
"""

from __future__ import annotations

import functools
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

from . import cache, embeddings, evaluate, indexes
from .attribution import attribute_misses
from .attribution import summarise as summarise_attribution
from .ops import COPY_JPEG_QUALITY, AugmentConfig, make_copies
from .descriptors import Descriptor, Unavailable, create_descriptor, resolve_methods
from .descriptors.base import open_progress, package_versions
from .descriptors.cnn import check_precision
from .inference.cpu import cpu_features
from .errors import BadImage, ConfigError, DatasetError
from .imageio import encode_jpeg, load_rgb
from .ops.severity import GRIDS, placement_rng
from .sampling import dataset_fingerprint, demo_root, discover, select, write_originals
from . import openset as openset_metrics
from .distractors import database_distractors, make_distractors, reference_rows, unsampled
from .metrics import Metric
from .search import Hits, best_pair_scores, save_index, search
from .tables import row_ids

# Bump one when its stage's output changes for the same inputs.
STAGE_VERSIONS = {"samples": 2, "copies": 2, "embed": 3, "search": 4, "distractors": 1, "openset": 1, "sweep": 1,
                  "sweepscore": 1, "attribution": 1, "references": 1}
EXACT_CHECK_K = 10  # an approximate index reports R@10 against exact search (and the top-10 overlap)
SWEEP_RANKS = (1, 10)  # severity curves report Recall@1 and Recall@10
NEIGHBOURS_KEPT = 20  # top-N neighbours stored per query for the dashboard
PREDICTIONS_PER_QUERY = 10  # open-set: the top-k database matches kept per query, as in DISC21
Progress = Callable[..., object]  # tqdm-like: progress(total=, desc=) -> obj with update(n), close()


@functools.cache
def _pixel_versions() -> tuple[tuple[str, str], ...]:
    return tuple({**package_versions(("Pillow", "torchvision", "torch", "numpy")),
                  "libjpeg": str(features.version("jpg"))}.items())


def pixel_versions() -> dict[str, str]:
    """Libraries whose upgrade can change the pixels of originals and copies (decoders, encoders, ops, RNG)."""
    return dict(_pixel_versions())


def prediction_rows(method: str, queries: pd.Series, sources: pd.Series, ids: np.ndarray, scores: np.ndarray,
                    references: pd.Series, metric: Metric, k: int = PREDICTIONS_PER_QUERY) -> pd.DataFrame:
    """``method, query, reference, rank, score, is_match`` for each query's top ``k``; the score is a
    similarity (a Hamming distance negated), as µAP expects."""
    ids, scores = ids[:, :k], scores[:, :k]
    n, width = ids.shape
    found = ids.ravel() >= 0  # an approximate index may return fewer than k
    reference = references.to_numpy()[ids.ravel()[found]]
    return pd.DataFrame({
        "method": method,
        "query": np.repeat(queries.to_numpy(), width)[found],
        "reference": reference,
        "rank": np.tile(np.arange(1, width + 1), n)[found],
        "score": metric.similarity(scores).ravel().astype(np.float64)[found],
        "is_match": reference == np.repeat(sources.to_numpy(), width)[found],
    })


def nearest_within_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """R@k as FAISS's benchmarks define it (1-recall@k): exact search's nearest neighbour is in the top ``k``."""
    if not len(exact):
        return float("nan")
    return float((found[:, :k] == exact[:, :1]).any(axis=1).mean())


def overlap_at_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of exact search's top ``k`` that an approximate search also returned in its top ``k``."""
    k = min(k, exact.shape[1], found.shape[1])
    if not len(exact) or not k:
        return float("nan")
    shared = [len(np.intersect1d(f[:k][f[:k] >= 0], e[:k])) for f, e in zip(found, exact)]
    return float(np.mean(shared) / k)


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
    distractors: int | None = None  # open-set queries; None: as many as there are copies; 0: closed-set only
    precision: str = "auto"  # CNN inference: auto, fp32 or int8 (descriptors.cnn.PRECISIONS)
    index: str = indexes.EXACT  # a FAISS index-factory string, or "auto" (malle.indexes)
    index_params: str = ""  # search-time parameters such as efSearch=256 or nprobe=32; default: per index
    db_distractors: int = 0  # database images not sampled as originals, that no query copies (DISC21-style)
    db_extra: str | None = None  # a folder of images, or of embeddings from `malle embed`, added to the database

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
            (self.distractors is None or self.distractors >= 0,
             f"--distractors must be 0 or more (got {self.distractors})"),
            (self.db_distractors >= 0, f"--db-distractors must be 0 or more (got {self.db_distractors})"),
            (self.db_extra is None or str(self.db_extra).strip() != "", "--db-extra must name a folder"),
            (str(self.index).strip() != "", "--index must be a FAISS index-factory string such as Flat, or auto"),
            (all(k >= 1 for k in self.ks), f"every K must be at least 1 (got {self.ks})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_precision(self.precision)

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
        cfg = self.config
        for method in self.methods:
            desc = self.descriptor(method)
            indexes.check(cfg.index, desc.metric, desc.dim, cfg.index_params)
            if self.extra_embeddings is not None:
                embeddings.check_matches(self.extra_embeddings, desc, self.extra_root)
            if not (self.embed_folder(method) / cache.DONE_MARK).is_file():
                desc.load()
                for notice in desc.notices:
                    self.log(notice)

    def descriptor(self, method: str) -> Descriptor:
        if method not in self._descriptors:
            desc = create_descriptor(method, weights=self.config.weights_for(method), precision=self.config.precision)
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
        cfg = self.config
        return self._folder("search", self.embed_folder(method).name, cfg.depth, cfg.index, cfg.index_params,
                            self.references_folder(method).name if self.has_references else "")

    def references_folder(self, method: str) -> Path:
        cfg = self.config
        return self._folder("references", self.samples_folder.name, self.descriptor(method).fingerprint(),
                            cfg.db_distractors, cfg.seed, self.extra_fingerprint)

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
                        precision=desc.precision, runtime=desc.runtime(), cpu=cpu_features().describe(),
                        items=n, encode_seconds=seconds,
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

    # -- the database: the originals, then extra references that no query copies ----------------------
    @property
    def has_references(self) -> bool:
        return bool(self.config.db_distractors or self.config.db_extra)

    @cached_property
    def extra_root(self) -> Path | None:
        if not self.config.db_extra:
            return None
        root = Path(self.config.db_extra).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--db-extra {root} is not a folder")
        return root

    @cached_property
    def extra_embeddings(self) -> dict | None:
        """The manifest of --db-extra when it is an embeddings folder (``malle embed``), else None."""
        if self.extra_root is None or not embeddings.is_embeddings_folder(self.extra_root):
            return None
        return embeddings.read_manifest(self.extra_root)

    @cached_property
    def extra_images(self) -> list:
        """Candidate images of --db-extra when it is a folder of images."""
        if self.extra_root is None or self.extra_embeddings is not None:
            return []
        return discover(self.extra_root, self.allowed_roots)[0]

    @cached_property
    def extra_fingerprint(self) -> str:
        if self.extra_embeddings is not None:
            return cache.fingerprint(self.extra_embeddings)
        return dataset_fingerprint(self.extra_images) if self.extra_images else ""

    @cached_property
    def db_distractor_images(self) -> list:
        """Unsampled images put in the database, drawn with the run seed; distractor queries never use them."""
        wanted = self.config.db_distractors
        if not wanted:
            return []
        pool = unsampled(self.discovered[0], self.originals)
        if len(pool) < wanted:
            self.log(f"Only {len(pool)} unsampled images can serve as database distractors (asked for {wanted}); "
                     "using them all.")
        return database_distractors(pool, wanted, self.config.seed)

    def references(self, method: str, progress: Progress | None = None) -> Stage:
        """Codes of the extra references for one method: encoded here, or read from an embeddings folder."""
        desc = self.descriptor(method)

        def build(tmp: Path, meta: dict) -> None:
            sources = reference_rows(self.db_distractor_images, self.extra_images)
            found = desc.encode_files_skipping([Path(p) for p in sources["path"]], progress=progress,
                                               desc=f"{desc.label}: extra references")
            table, codes = sources.iloc[found.kept][["file", "class"]], [found.codes]
            if self.extra_embeddings is not None:
                loaded = embeddings.read(self.extra_root, desc)
                if embeddings.fingerprint_differs(loaded.manifest, desc):
                    self.log(f"{desc.label}: the embeddings in {self.extra_root} were made with another precision, "
                             f"weights or library version ({loaded.manifest['label']}); using them as they are.")
                table = pd.concat([table, pd.DataFrame({"file": [f"embedded:{p}" for p in loaded.paths],
                                                        "class": ""})], ignore_index=True)
                codes.append(loaded.vectors)
            cache.write_table(tmp / "references.parquet", table.reset_index(drop=True))
            cache.write_npy(tmp / "codes.npy", np.concatenate(codes) if len(table) else desc.empty_codes())
            cache.write_table(tmp / "skipped.csv", found.skipped)
            meta.update(method=method, items=len(table), skipped=len(found.skipped))

        self.samples(progress)
        stage = self._obtain("references", method, self.references_folder(method), build)
        if stage.meta["skipped"]:
            self.log(f"{desc.label}: {stage.meta['skipped']} extra reference file(s) skipped; reasons in "
                     f"{stage.folder / 'skipped.csv'}")
        return stage

    def database(self, method: str) -> pd.DataFrame:
        """``file, class`` in id order: the originals, then the extra references."""
        if not self.has_references:
            return self.originals[["file", "class"]]
        refs = cache.read_table(self.references(method).folder / "references.parquet")
        return pd.concat([self.originals[["file", "class"]], refs], ignore_index=True)

    def database_codes(self, method: str) -> np.ndarray:
        originals = self.codes(method)[0]
        if not self.has_references:
            return originals
        return np.concatenate([originals, cache.read_npy(self.references(method).folder / "codes.npy")])

    # -- stage 4 and 5: search and per-query evaluation ----------------------------------------
    def evaluation(self, method: str, progress: Progress | None = None) -> Stage:
        desc = self.descriptor(method)
        metric = desc.metric

        def build(tmp: Path, meta: dict) -> None:
            queries, db = self.codes(method)[1], self.database_codes(method)
            index, index_meta = self._build_search_index(desc, db, tmp / "index.faiss")
            start = time.perf_counter()
            hits = search(index, queries, self.config.depth, metric)
            seconds = time.perf_counter() - start
            if not index_meta["index_exact"]:
                exact = search(metric.build_index(db), queries, EXACT_CHECK_K, metric)
                index_meta.update(r10_vs_exact=nearest_within_k(hits.ids, exact.ids, EXACT_CHECK_K),
                                  overlap10_vs_exact=overlap_at_k(hits.ids, exact.ids, EXACT_CHECK_K))
            sources = row_ids(self.originals["file"], self.manifest["source"])
            true_scores = best_pair_scores(metric, queries, db[sources])
            table = evaluate.per_query_table(method, self.database(method), self.manifest, hits, true_scores)
            cache.write_table(tmp / "per_query.parquet", table)
            cache.write_npy(tmp / "neighbour_ids.npy", hits.ids[:, :NEIGHBOURS_KEPT])
            cache.write_npy(tmp / "neighbour_scores.npy", hits.scores[:, :NEIGHBOURS_KEPT])
            meta.update(method=method, items=len(queries), search_seconds=seconds,
                        ms_per_query=1000 * seconds / max(len(queries), 1), tie_rate=float(hits.top1_tied.mean()),
                        **index_meta)

        self.embedding(method, progress)
        if self.has_references:
            self.references(method, progress)
        return self._obtain("search", method, self.search_folder(method), build)

    def _build_search_index(self, desc: Descriptor, db: np.ndarray, path: Path):
        """The configured index over the database, saved to ``path``, and what to record about it."""
        cfg = self.config
        choice = indexes.choose(cfg.index, len(db), desc.dim, desc.metric, cfg.index_params)
        start = time.perf_counter()
        index = indexes.new_index(choice, desc.metric, desc.dim)
        indexes.train_and_add(index, np.ascontiguousarray(db), desc.metric)
        seconds = time.perf_counter() - start
        save_index(index, path, desc.metric)
        return index, {"index": choice.describe(), "index_reason": choice.reason, "index_exact": choice.exact,
                       "index_seconds": seconds, "index_bytes": path.stat().st_size, "database_size": len(db),
                       "r10_vs_exact": 1.0, "overlap10_vs_exact": 1.0}

    def search_index(self, method: str):
        """The configured index over the whole database (originals and extra references)."""
        return self.descriptor(method).metric.read_index(self.evaluation(method).folder / "index.faiss")

    # -- open set: distractor queries and detection scores ----------------------------------------
    @cached_property
    def distractor_pool(self) -> list:
        """Images of the dataset that were neither sampled as originals nor put in the database."""
        reserved = {c.rel for c in self.db_distractor_images}
        return [c for c in unsampled(self.discovered[0], self.originals) if c.rel not in reserved]

    @cached_property
    def distractor_target(self) -> int:
        """How many distractor queries to make: as asked, by default as many as there are copies; 0 when the
        dataset has no unsampled image (then the run is closed-set, with a notice)."""
        wanted = len(self.manifest) if self.config.distractors is None else self.config.distractors
        if wanted and not self.distractor_pool:
            self.log("No distractor queries: every usable image of the dataset is an original. Running closed-set.")
            return 0
        return wanted

    @cached_property
    def distractors_folder(self) -> Path:
        return self._folder("distractors", self.samples_folder.name, self.config.augment.as_dict(), self.config.seed,
                            self.distractor_target, pixel_versions(),
                            # Database distractors shrink the pool; without them the key stays as it was.
                            *([self.config.db_distractors] if self.config.db_distractors else []))

    def distractors(self, progress: Progress | None = None) -> Stage:
        cfg = self.config

        def build(tmp: Path, meta: dict) -> None:
            manifest, skipped = make_distractors(self.distractor_pool, self.distractor_target, tmp / "images",
                                                 cfg.augment, cfg.seed, progress)
            cache.write_table(tmp / "manifest.parquet", manifest)
            cache.write_table(tmp / "skipped.csv", pd.DataFrame(skipped, columns=["path", "reason"]))
            meta.update(items=len(manifest), pool=len(self.distractor_pool))

        first = ("distractors", "") not in self._stages
        stage = self._obtain("distractors", "", self.distractors_folder, build)
        if first and stage.meta["items"] < self.distractor_target:
            self.log(f"Only {stage.meta['items']} distractor queries could be made from {stage.meta['pool']} unsampled "
                     f"images (asked for {self.distractor_target}); using them all.")
        return stage

    @cached_property
    def distractor_manifest(self) -> pd.DataFrame:
        return cache.read_table(self.distractors().folder / "manifest.parquet")

    @property
    def distractors_dir(self) -> Path:
        return self.distractors().folder / "images"

    def openset_folder(self, method: str) -> Path:
        return self._folder("openset", self.search_folder(method).name, self.distractors_folder.name,
                            PREDICTIONS_PER_QUERY)

    def openset(self, method: str, progress: Progress | None = None) -> Stage:
        """Every query, copies and distractors alike, with its top-k database matches and their scores."""
        desc = self.descriptor(method)

        def build(tmp: Path, meta: dict) -> None:
            codes = desc.encode_files([self.distractors_dir / f for f in self.distractor_manifest["file"]],
                                      progress=progress, desc=f"{desc.label}: distractor queries", queries=True)
            cache.write_npy(tmp / "distractors.npy", codes)
            found = search(self.search_index(method), codes, PREDICTIONS_PER_QUERY, desc.metric)
            copy_ids, copy_scores = self.neighbours(method)
            references = self.database(method)["file"]
            table = pd.concat([
                prediction_rows(method, self.manifest["file"], self.manifest["source"], copy_ids, copy_scores,
                                references, desc.metric),
                prediction_rows(method, self.distractor_manifest["file"], self.distractor_manifest["source"],
                                found.ids, found.scores, references, desc.metric),
            ], ignore_index=True)
            scores, curve = openset_metrics.score(table, n_positives=len(self.manifest))
            cache.write_table(tmp / "predictions.parquet", table)
            cache.write_table(tmp / "pr_curve.parquet", curve.assign(method=method))
            meta.update(method=method, items=len(codes), **asdict(scores))

        self.evaluation(method, progress)
        self.distractors(progress)
        return self._obtain("openset", method, self.openset_folder(method), build)

    # -- attribution of misses: which op in a chain broke the match -----------------------------
    def attribution(self, method: str, progress: Progress | None = None) -> Stage:
        desc = self.descriptor(method)

        def build(tmp: Path, meta: dict) -> None:
            per_query = cache.read_table(self.evaluation(method).folder / "per_query.parquet")
            missed = int(((per_query["rank"].astype("Float64").fillna(np.inf) > 1)
                          & (per_query["chain_length"] >= 2)).sum())
            bar = open_progress(progress, missed, f"{desc.label}: which op broke each miss")
            charges = attribute_misses(desc, self.search_index(method), per_query, self.manifest, self.originals,
                                       self.originals_dir, bar)
            bar.close()
            cache.write_table(tmp / "per_query.parquet", charges)
            cache.write_table(tmp / "summary.parquet", summarise_attribution(method, charges))
            meta.update(method=method, items=len(charges))

        self.evaluation(method, progress)
        return self._obtain("attribution", method,
                            self._folder("attribution", self.search_folder(method).name), build)

    # -- severity sweeps: one op at a time, level by level --------------------------------------
    def sweep_folder(self, op: str, level: int) -> Path:
        grid = GRIDS[op]
        return self._folder("sweep", self.samples_folder.name, op, level, grid.values[level], self.config.seed,
                            pixel_versions())

    def sweep(self, op: str, level: int, progress: Progress | None = None) -> Stage:
        """Every original with ``op`` alone at ``level``; an original the level makes unusable is skipped."""
        grid, seed = GRIDS[op], self.config.seed

        def build(tmp: Path, meta: dict) -> None:
            (tmp / "images").mkdir()
            rows, skipped = [], []
            bar = open_progress(progress, len(self.originals), f"{op} {grid.describe(grid.values[level])}")
            for file in self.originals["file"]:
                if level == 0:  # the untouched original, byte for byte
                    cache.write_bytes(tmp / "images" / file, (self.originals_dir / file).read_bytes())
                    rows.append(file)
                else:
                    try:
                        out = grid.make(load_rgb(self.originals_dir / file), grid.values[level],
                                        placement_rng(seed, file, op))
                        cache.write_bytes(tmp / "images" / file, encode_jpeg(out, COPY_JPEG_QUALITY))
                        rows.append(file)
                    except BadImage as err:
                        skipped.append({"path": file, "reason": str(err)})
                bar.update(1)
            bar.close()
            cache.write_table(tmp / "manifest.parquet", pd.DataFrame({"file": rows, "source": rows}))
            cache.write_table(tmp / "skipped.csv", pd.DataFrame(skipped, columns=["path", "reason"]))
            meta.update(op=op, level=level, param=grid.describe(grid.values[level]), items=len(rows))

        self.samples(progress)
        return self._obtain("sweep", f"{op}:{level}", self.sweep_folder(op, level), build)

    def sweep_scores(self, method: str, op: str, level: int, progress: Progress | None = None) -> Stage:
        """Recall@1 and @10 of ``method`` on one sweep level."""
        desc = self.descriptor(method)
        sweep = self.sweep(op, level, progress)

        def build(tmp: Path, meta: dict) -> None:
            manifest = cache.read_table(sweep.folder / "manifest.parquet")
            codes = desc.encode_files([sweep.folder / "images" / f for f in manifest["file"]], queries=True,
                                      progress=progress, desc=f"{desc.label}: {op} level {level}")
            hits = search(self.index(method), codes, max(SWEEP_RANKS), desc.metric)
            truth = row_ids(self.originals["file"], manifest["source"])
            rank = evaluate.first_match(hits.ids == truth[:, None])
            ranks = rank.astype("Float64").fillna(np.inf).to_numpy()
            meta.update(method=method, op=op, level=level, param=sweep.meta["param"], n=len(manifest),
                        **{f"recall_at_{k}": float((ranks <= k).mean()) if len(ranks) else float("nan")
                           for k in SWEEP_RANKS}, items=len(manifest))

        self.embedding(method, progress)
        return self._obtain("sweepscore", f"{method}:{op}:{level}",
                            self._folder("sweepscore", self.embed_folder(method).name, sweep.folder.name), build)

    def sweep_scores_done(self, method: str, op: str, level: int) -> bool:
        """Whether this level's scores are in the cache (without computing anything)."""
        folder = self._folder("sweepscore", self.embed_folder(method).name, self.sweep_folder(op, level).name)
        return (folder / cache.DONE_MARK).is_file()

    def severity(self, ops: Sequence[str], progress: Progress | None = None) -> pd.DataFrame:
        """``method, op, level, param, recall_at_1, recall_at_10, n`` for every method, op and level."""
        self.check()
        rows = []
        for op in ops:
            for level in range(len(GRIDS[op].values)):
                for method in self.methods:
                    meta = self.sweep_scores(method, op, level, progress).meta
                    rows.append({key: meta[key] for key in
                                 ("method", "op", "level", "param", "recall_at_1", "recall_at_10", "n")})
        return pd.DataFrame(rows, columns=["method", "op", "level", "param", "recall_at_1", "recall_at_10", "n"])

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
        for method in self.methods:
            self.attribution(method, progress)
            if self.distractor_target:
                self.openset(method, progress)
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

    @property
    def has_openset(self) -> bool:
        return bool(self.experiment.distractor_target)

    def openset(self) -> pd.DataFrame:
        """Per method: µAP, recall at precision 0.9 and its threshold, queries and ground-truth pairs."""
        columns = ["method", "uap", "recall_at_p90", "threshold_at_p90", "n_queries", "n_positives"]
        if not self.has_openset:
            return pd.DataFrame(columns=columns)
        return pd.DataFrame([{c: self.experiment.openset(m).meta[c] if c != "method" else m for c in columns}
                             for m in self.methods])

    def predictions(self, methods: Sequence[str] | None = None) -> pd.DataFrame:
        """Every query's top-k database matches, for ``methods`` (default: all of them)."""
        if not self.has_openset:
            return pd.DataFrame(columns=["method", "query", "reference", "rank", "score", "is_match"])
        return pd.concat([cache.read_table(self.experiment.openset(m).folder / "predictions.parquet")
                          for m in methods or self.methods], ignore_index=True)

    def pr_curves(self) -> pd.DataFrame:
        if not self.has_openset:
            return pd.DataFrame(columns=["threshold", "precision", "recall", "method"])
        return pd.concat([cache.read_table(self.experiment.openset(m).folder / "pr_curve.parquet")
                          for m in self.methods], ignore_index=True)

    def attribution(self) -> pd.DataFrame:
        """Per method and op: the misses charged to it (shared when several ops restore the hit) and its share."""
        return pd.concat([cache.read_table(self.experiment.attribution(m).folder / "summary.parquet")
                          for m in self.methods], ignore_index=True)

    def charged(self, method: str) -> pd.DataFrame:
        """Per missed query of ``method`` with two or more ops: the op(s) charged with the miss."""
        return cache.read_table(self.experiment.attribution(method).folder / "per_query.parquet")

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
                         # Stages cached before these were recorded say so rather than guess.
                         "runtime": embed.get("runtime", "not recorded"), "cpu": embed.get("cpu", "not recorded"),
                         "images_per_s": embed["images_per_s"], "ms_per_query": found["ms_per_query"],
                         "index": found["index"], "database_size": found["database_size"],
                         "index_bytes": found["index_bytes"], "r10_vs_exact": found["r10_vs_exact"],
                         "overlap10_vs_exact": found["overlap10_vs_exact"],
                         "top1_tie_rate": found["tie_rate"], **bounds.loc[m].to_dict(),
                         "low_quality_share": embed.get("low_quality_share", float("nan"))})
        return pd.DataFrame(rows)

    def timings(self) -> pd.DataFrame:
        """Seconds per stage as first computed, and whether this run took it from the cache."""
        exp = self.experiment
        stages = [("samples", "", exp.samples()), ("copies", "", exp.copies())]
        for m in self.methods:
            stages += [("embed", m, exp.embedding(m)), ("search", m, exp.evaluation(m)),
                       ("attribution", m, exp.attribution(m))]
        if self.has_openset:
            stages += [("distractors", "", exp.distractors())]
            stages += [("openset", m, exp.openset(m)) for m in self.methods]
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
            "attribution.csv": self.attribution(),
            "methods.csv": self.methods_table(),
            "timings.csv": self.timings(),
        }
        if self.has_openset:
            exp = self.experiment
            tables["manifest.csv"] = pd.concat([exp.manifest, exp.distractor_manifest], ignore_index=True)
            tables["skipped.csv"] = pd.concat([exp.skipped, cache.read_table(exp.distractors().folder / "skipped.csv")],
                                              ignore_index=True).astype(str)
            tables.update({"openset.csv": self.openset(), "predictions.parquet": self.predictions(),
                           "pr_curve.parquet": self.pr_curves()})
        for name, table in tables.items():
            cache.write_table(out / name, table)
        cache.write_json(out / "config.json", {**self.config.as_dict(), "methods": self.methods,
                                               "data": str(self.experiment.data_root),
                                               "chain_lengths": self.config.augment.describe(),
                                               "unavailable": [u.__dict__ for u in self.unavailable]})
        return [out / name for name in [*tables, "config.json"]]

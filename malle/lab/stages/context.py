"""What every stage of one experiment shares: the config, the descriptors, the dataset's files, and the
stage outputs read as tables (each through the engine, so reading one builds it when needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from malle.data.distractor_queries import origins
from malle.data.pools import SparePools, donor_key, reference_path, unsampled
from malle.data.sampling import dataset_fingerprint, demo_root, discover
from malle.descriptors import Descriptor
from malle.descriptors.registry import MethodRegistry
from malle.errors import ConfigError
from malle.io import cache, shards
from malle.lab.stages.base import Built, Node, Progress
from malle.lab.stages.outputs import (
    CopiesOutputs,
    DistractorsOutputs,
    EmbedOutputs,
    ReferencesOutputs,
    SamplesOutputs,
    SearchOutputs,
)
from malle.lab.stages.registry import STAGES
from malle.lab.stages.runner import StageRunner
from malle.ops import OpContext
from malle.tricks.methods import NORM, base_of, parse
from malle.tricks.normalise import ScoreNormalisation


class RunContext:
    """One experiment's shared state. Stages run lazily, each at most once (``stage``)."""

    def __init__(self, config, cache_root: Path | str | None = None, log: Callable[[str], None] | None = None,
                 allowed_roots: Sequence[Path] | None = None):
        self.config = config
        self.root = Path(cache_root).expanduser() if cache_root else cache.default_root()
        self.log = log or (lambda message: None)
        self.data_root = Path(config.data).expanduser() if config.data else demo_root()
        self.allowed_roots = allowed_roots  # None: links may lead anywhere (the CLI's choice)
        self.registry = MethodRegistry()  # this run's method names, spec files' included
        self.methods, self.unavailable = self.registry.resolve_methods(config.methods, dict(config.weights))
        for skipped in self.unavailable:
            self.log(skipped.notice())
        self.engine = StageRunner(STAGES, self.root, self.log)
        self._descriptors: dict[str, Descriptor] = {}
        self._references: dict[str, pd.DataFrame] = {}

    # -- stages ----------------------------------------------------------------------------------
    def stage(self, kind: str, *args, progress: Progress | None = None) -> Built:
        """One stage instance, e.g. ``stage("embed", "phash")``: from memory, the cache, or built."""
        return self.engine.obtain(self, Node(kind, args), progress)

    def folder(self, kind: str, *args) -> Path:
        """Where that stage is (or will be) cached, computing nothing."""
        return self.engine.folder(self, Node(kind, args))

    def is_cached(self, kind: str, *args) -> bool:
        return self.engine.is_cached(self, Node(kind, args))

    def descriptor(self, method: str) -> Descriptor:
        """The method's descriptor; a derived method (``METHOD+norm``) encodes with its base method's."""
        base = base_of(method)
        if base != method:
            return self.descriptor(base)
        if method not in self._descriptors:
            desc = self.registry.create_descriptor(method, weights=self.config.weights_for(method),
                                                   precision=self.config.precision, engine=self.config.engine)
            desc.use_cache(self.root)
            self._descriptors[method] = desc
        return self._descriptors[method]

    # -- the dataset -----------------------------------------------------------------------------
    @cached_property
    def discovered(self):
        """(candidate images, files passed over) in the dataset folder."""
        return discover(self.data_root, self.allowed_roots)

    @cached_property
    def dataset_fingerprint(self) -> str:
        return dataset_fingerprint(self.discovered[0])

    @cached_property
    def originals(self) -> pd.DataFrame:
        """The originals, in id order (sorted by file name)."""
        return cache.read_table(SamplesOutputs(self.stage("samples").folder).table)

    @cached_property
    def skipped(self) -> pd.DataFrame:
        """Files passed over, with paths relative to the dataset folder."""
        return cache.read_table(SamplesOutputs(self.stage("samples").folder).skipped).astype(str)

    @property
    def originals_dir(self) -> Path:
        return SamplesOutputs(self.stage("samples").folder).originals

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return cache.read_table(CopiesOutputs(self.stage("copies").folder).manifest)

    @property
    def copies_dir(self) -> Path:
        return CopiesOutputs(self.stage("copies").folder).images

    # -- the database: the originals, then extra references that no query copies --------------------
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
        if self.extra_root is None or not shards.is_embeddings_folder(self.extra_root):
            return None
        return shards.read_manifest(self.extra_root)

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
    def pools(self) -> SparePools:
        """The spare images split into pools, in ``malle.data.pools``' declared order."""
        spare = unsampled(self.discovered[0], self.originals)
        if len(spare) < self.config.db_distractors:
            self.log(f"Only {len(spare)} unsampled images can serve as database distractors "
                     f"(asked for {self.config.db_distractors}); using them all.")
        return SparePools(tuple(spare), self.config.seed, self.config.db_distractors,
                          self.config.augment.has_composites)

    @property
    def db_distractor_images(self) -> list:
        """Unsampled images put in the database; distractor queries never use them."""
        return self.pools.database_distractors

    @property
    def donor_images(self) -> list:
        """The other pictures composite ops paste (none when the chains hold no composite op)."""
        return self.pools.donors

    @property
    def donor_key(self) -> dict:
        return donor_key(self.config.db_distractors)

    @property
    def wants_background(self) -> bool:
        """Whether a method normalises its scores (``METHOD+norm``), so the run needs a background set."""
        return any(parse(m).uses(NORM) for m in self.methods)

    @cached_property
    def normalisation(self) -> ScoreNormalisation:
        """What ``METHOD+norm`` subtracts (``--score-norm``)."""
        return ScoreNormalisation.parse(self.config.score_norm)

    @cached_property
    def background_images(self) -> list:
        """``METHOD+norm``'s background set: ``--background DIR``'s images, else up to ``MAX_BACKGROUND`` unsampled
        images that are neither database distractors, donors nor distractor sources, drawn with their own seed
        stream, and only when a method uses ``+norm`` (so other runs draw nothing and stay as they were). The
        distractor queries are made first (the ``background`` stage needs them), so their pool does not move."""
        if not self.wants_background:
            return []
        if self.config.background:
            root = Path(self.config.background).expanduser()
            if not root.is_dir():
                raise ConfigError(f"--background {root} is not a folder")
            return discover(root, self.allowed_roots)[0]
        return self.pools.background(origins(self.distractor_manifest) if self.distractor_target else set())

    @cached_property
    def op_context(self) -> OpContext:
        """What composite ops read: the donors, relative to the dataset folder."""
        return OpContext(self.data_root, tuple(c.rel for c in self.donor_images))

    def references(self, method: str) -> pd.DataFrame:
        """``file, class`` of the extra references of ``method``'s database, in id order after the originals."""
        if method not in self._references:
            self._references[method] = cache.read_table(
                ReferencesOutputs(self.stage("references", method).folder).table)
        return self._references[method]

    def database(self, method: str) -> pd.DataFrame:
        """``file, class`` in id order: the originals, then the extra references."""
        if not self.has_references:
            return self.originals[["file", "class"]]
        return pd.concat([self.originals[["file", "class"]], self.references(method)], ignore_index=True)

    def database_image(self, method: str, item: int) -> Path | None:
        """Where database item ``item``'s image is: an original, or an extra reference's source file; None for a
        reference known only by its embedding."""
        if item < len(self.originals):
            return self.originals_dir / self.originals["file"].iat[item]
        file = self.references(method)["file"].iat[item - len(self.originals)]
        return reference_path(file, self.data_root, self.extra_root)

    def codes(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """(the originals' codes, the copies' codes)."""
        out = EmbedOutputs(self.stage("embed", method).folder)
        return cache.read_npy(out.originals), cache.read_npy(out.queries)

    def database_codes(self, method: str) -> np.ndarray:
        originals = self.codes(method)[0]
        if not self.has_references:
            return originals
        references = ReferencesOutputs(self.stage("references", method).folder)
        return np.concatenate([originals, cache.read_npy(references.codes)])

    def embed_index(self, method: str):
        """The exact index over the originals alone (uploads, lab results and severity sweeps search it)."""
        return self.descriptor(method).metric.read_index(EmbedOutputs(self.stage("embed", method).folder).index)

    def search_index(self, method: str):
        """The configured index over the whole database (originals and extra references)."""
        return self.descriptor(method).metric.read_index(SearchOutputs(self.stage("search", method).folder).index)

    def neighbours(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Top-N database ids and scores per copy (rows follow the manifest; ids follow ``database``)."""
        out = SearchOutputs(self.stage("search", method).folder)
        return cache.read_npy(out.neighbour_ids), cache.read_npy(out.neighbour_scores)

    # -- open set: distractor queries ------------------------------------------------------------------
    @property
    def wants_distractors(self) -> bool:
        return self.config.distractors != 0

    @property
    def distractor_pool(self) -> list:
        """Images of the dataset that were neither sampled as originals, nor put in the database, nor donors."""
        return self.pools.distractor_sources

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
    def distractor_manifest(self) -> pd.DataFrame:
        return cache.read_table(DistractorsOutputs(self.stage("distractors").folder).manifest)

    @property
    def distractors_dir(self) -> Path:
        return DistractorsOutputs(self.stage("distractors").folder).images

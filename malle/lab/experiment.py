"""An experiment: its config, and the facade the CLI, the dashboard and the benchmarks use.

A run goes through the cached stages of ``malle.lab.stages`` (one module each, run by one ``StageRunner``)::

    samples -> copies -> embed -> [references] -> search -> attribution
                      \\-> distractors ---------------------> openset -> calibrate
    samples -> sweep -> sweepcodes -> sweepscore <- embed      (malle severity)

Every stage's folder is keyed by a fingerprint of its own parts and its inputs' keys, computed
before anything runs (from the dataset's file list, the configuration, the libraries that
produce pixels, and each descriptor's cheap fingerprint): a second identical run reuses every
stage and builds no model, and changing one method recomputes only that method's stages.
``python -m malle stages`` shows the graph, the keys and what is cached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from malle.errors import ConfigError
from malle.evaluation import recall
from malle.inference.precision import check_engine, check_precision
from malle.io import cache, shards
from malle.lab.results import Results
from malle.lab.stages import Node, RunContext, pixel_versions
from malle.lab.stages.outputs import SearchOutputs
from malle.ops import AugmentConfig
from malle.ops.severity import GRIDS
from malle.retrieval import indexes
from malle.retrieval.topk import Hits, search
from malle.tricks import methods as trick_names
from malle.tricks.normalise import DEFAULT_SCORE_NORM, ScoreNormalisation

# The stages beyond the closed-set results, that only some pages and reports read.
ANALYSIS_STAGES = ("attribution", "distractors", "openset", "calibrate")

__all__ = ["Experiment", "ExperimentConfig", "Results", "pixel_versions"]


@dataclass(frozen=True)
class ExperimentConfig:
    data: str | None = None  # None: the built-in demo photos
    n: int = 200
    seed: int = 0
    n_classes: int = 20
    methods: tuple[str, ...] | None = None  # None: the defaults (see descriptors.resolve_methods)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ks: tuple[int, ...] = recall.KS
    weights: tuple[tuple[str, str], ...] = ()  # (method, weights file) for descriptors that take one
    depth: int = 1000  # ranks beyond this are reported as missing
    distractors: int | None = None  # open-set queries; None: as many as there are copies; 0: closed-set only
    precision: str = "auto"  # network inference: auto, fp32, bf16 or int8 (inference.precision.PRECISIONS)
    engine: str = "auto"  # what runs the networks: auto, onnxruntime or openvino (inference.precision.ENGINES)
    index: str = indexes.EXACT  # a FAISS index-factory string, or "auto" (malle.retrieval.indexes)
    index_params: str = ""  # search-time parameters such as efSearch=256 or nprobe=32; default: per index
    db_distractors: int = 0  # database images not sampled as originals, that no query copies (DISC21-style)
    db_extra: str | None = None  # a folder of images, or of embeddings from `malle embed`, added to the database
    background: str | None = None  # METHOD+norm's background set: a folder of images; None: held-apart dataset images
    score_norm: str = DEFAULT_SCORE_NORM  # what METHOD+norm subtracts, in SSCD's BETA[FIRST,LAST] syntax

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
            (self.background is None or str(self.background).strip() != "", "--background must name a folder"),
            (str(self.index).strip() != "", "--index must be a FAISS index-factory string such as Flat, or auto"),
            (all(k >= 1 for k in self.ks), f"every K must be at least 1 (got {self.ks})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        check_precision(self.precision)
        check_engine(self.engine, self.precision)
        # One spelling per setting ("1.0[0,2]" is "1[0,2]"), so equal settings share cache keys and compare equal.
        object.__setattr__(self, "score_norm", ScoreNormalisation.parse(self.score_norm).spec())

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


class Experiment(RunContext):
    """The stages of one config, run lazily (``stage``) or all at once (``run``).

    One instance may serve several threads (dashboard sessions): each stage is
    obtained under its own lock, so reading a finished stage never waits for
    another stage that is still being built.
    """

    def check(self) -> None:
        """Fail before any work if a method's weights cannot be had and a stage of it must be computed.

        Loads them into the descriptor the run then uses, so they are read once; a method
        whose embeddings are cached loads nothing.
        """
        cfg = self.config
        for method in self.methods:
            desc = self.descriptor(method)
            indexes.check(cfg.index, desc.metric, desc.dim, cfg.index_params)
            if self.extra_embeddings is not None and self.extra_root is not None:  # read from that folder
                shards.check_matches(self.extra_embeddings, desc, self.extra_root)
            if not self.is_cached("embed", method):
                desc.load()
                for notice in desc.notices:
                    self.log(notice)

    def run_nodes(self, open_set: bool | None = None) -> list[Node]:
        """The stage instances ``run`` obtains, each after what it needs.

        ``open_set``: whether distractor queries are made; by default as the data allows (which needs the
        copies), while ``wants_distractors`` answers from the config alone."""
        if open_set is None:
            open_set = bool(self.distractor_target)
        nodes = [Node("samples"), Node("copies")]
        for method in self.methods:
            nodes += [Node("embed", (method,)), *([Node("references", (method,))] if self.has_references else []),
                      Node("search", (method,)), Node("attribution", (method,))]
        if open_set:
            nodes += [Node("distractors"), *(Node("openset", (method,)) for method in self.methods),
                      *(Node("calibrate", (method,)) for method in self.methods)]
        return nodes

    def core_nodes(self) -> list[Node]:
        """What ``results`` obtains: samples, copies and each method's embeddings (references) and search."""
        return [node for node in self.run_nodes(open_set=False) if node.kind not in ANALYSIS_STAGES]

    def analysis_nodes(self) -> list[Node]:
        """What ``run`` obtains beyond ``results``: attribution, then the open set when the data allows it."""
        nodes = [Node("attribution", (method,)) for method in self.methods]
        if self.distractor_target:
            nodes += [Node(kind, (method,)) for kind in ("openset", "calibrate") for method in self.methods]
        return nodes

    def results(self, progress=None) -> Results:
        """The closed-set results (every copy's rank per method), computing no analysis (``ANALYSIS_STAGES``)."""
        self.check()
        cache.sweep_leftovers(self.root)
        per_query = [cache.read_table(SearchOutputs(self.stage("search", m, progress=progress).folder).per_query)
                     for m in self.methods]
        return Results(self, pd.concat(per_query, ignore_index=True))

    def run(self, progress=None) -> Results:
        """Every stage, computed or taken from the cache; ``progress`` reports the computed ones."""
        results = self.results(progress)
        for node in self.analysis_nodes():
            self.engine.obtain(self, node, progress)
        return results

    def severity_nodes(self, ops: Sequence[str]) -> list[Node]:
        return [Node("sweepscore", (method, op, level)) for op in ops for level in range(len(GRIDS[op].values))
                for method in self.methods]

    def severity(self, ops: Sequence[str], progress=None) -> pd.DataFrame:
        """``method, op, level, param, recall_at_1, recall_at_10, n`` for every method, op and level."""
        self.check()
        columns = ["method", "op", "level", "param", "recall_at_1", "recall_at_10", "n"]
        rows = [self.engine.obtain(self, node, progress).meta for node in self.severity_nodes(ops)]
        return pd.DataFrame([{key: meta[key] for key in columns} for meta in rows], columns=columns)

    def query(self, method: str, images: Sequence[Image.Image], k: int = 5) -> Hits:
        """Search new images (uploads, lab results) among the originals, in a method's cached index.

        Only base methods: a matching trick (``+norm``...) needs its stage's background set, windows
        or verification, so answering with the base's hits under its name would mislabel them."""
        if trick_names.parse(method).is_derived:
            raise ConfigError(f"{method}: matching tricks apply to a run's queries, not to a single new image; "
                              f"query {trick_names.base_of(method)} instead")
        desc = self.descriptor(method)
        return search(self.embed_index(method), desc.encode_queries(list(images)), k, desc.metric)

    @property
    def samples_folder(self) -> Path:
        return self.folder("samples")

    @property
    def copies_folder(self) -> Path:
        return self.folder("copies")

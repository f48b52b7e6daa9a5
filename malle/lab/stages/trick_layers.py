"""The matching tricks applied to a run: each takes the candidates of the method it builds on and returns its own.

A derived method (``malle.tricks.methods``) adds its last trick to its parent (``sscd+regions+norm`` adds
``norm`` to ``sscd+regions``). Each layer works on two sides, both as stages (``malle.lab.stages.derived``):

- ``copies``: the copies' candidates (``CopyHits``); a layer that only re-scores or re-orders the top of the
  list says so (``complete=False``) and ranks beyond that list are the parent's;
- ``distractors``: the distractor queries' top ``PREDICTIONS_PER_QUERY`` candidates (``Candidates``).

The layers:

- ``Regions``: the query's eleven windows (``regions.windows``) are encoded with the base method and searched in
  its database; each reference keeps its best window score (``malle.retrieval.topk`` merges variants the same way);
- ``Verify``: the top ``VERIFY_TOP`` candidates are re-ranked by SIFT + RANSAC inliers fused with the score
  (``verify.fuse``); candidates below them keep their place and score;
- ``Norm``: every score of a query less beta times its base code's mean background similarity at the configured
  ranks (``--score-norm``, SSCD's 1[0,2] by default: ranks 1-3; ``normalise``); the order within a query does
  not change, so neither does Recall@K.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from malle.descriptors.base import open_progress
from malle.io import cache
from malle.io.images import load_rgb
from malle.io.tables import row_ids
from malle.lab.stages.outputs import BackgroundOutputs, OpenSetOutputs
from malle.retrieval.topk import best_pair_scores, search
from malle.tricks import regions, verify
from malle.tricks.methods import NORM, REGIONS, VERIFY, MethodName, Trick
from malle.tricks.normalise import background_index, background_similarity, normalise

if TYPE_CHECKING:
    from malle.lab.stages.base import Ctx

VERIFY_TOP = 10  # candidates verified per query: DISC21's predictions per query, so µAP sees every re-ranking
REGION_BATCH = 8  # queries whose windows are encoded together


@dataclass(frozen=True)
class Candidates:
    """Top candidates per query: database ids (-1 pads) and similarities, best first."""

    ids: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class CopyHits(Candidates):
    """The copies' candidates, each copy's true original's score, and whether the list reaches the search depth
    (else ranks beyond it are the parent's)."""

    true_scores: np.ndarray
    complete: bool


class Layer(ABC):
    trick: Trick

    def needs(self, method: MethodName) -> tuple[tuple[str, tuple], ...]:
        """What this layer reads beyond its parent's outputs: (stage kind, its parameters)."""
        return ()

    @abstractmethod
    def key(self, ctx: Ctx) -> tuple:
        """The layer's constants and settings, for cache keys."""

    @abstractmethod
    def copies(self, ctx: Ctx, method: MethodName, parent: CopyHits) -> CopyHits: ...

    @abstractmethod
    def distractors(self, ctx: Ctx, method: MethodName, parent: Candidates) -> Candidates: ...


def query_paths(ctx: Ctx, distractors: bool) -> list[Path]:
    run = ctx.run
    if distractors:
        return [run.distractors_dir / f for f in run.distractor_manifest["file"]]
    return [run.copies_dir / f for f in run.manifest["file"]]


class Regions(Layer):
    trick = REGIONS

    def key(self, ctx: Ctx) -> tuple:
        return regions.WINDOW, regions.STRIDE, regions.CENTRE

    def codes(self, ctx: Ctx, base: str, paths: Sequence[Path]) -> np.ndarray:
        """(queries, windows, width): every window of every query, encoded with the base method."""
        desc = ctx.run.descriptor(base)
        bar = open_progress(ctx.progress, len(paths), f"{desc.label}: query windows")
        chunks = []
        for start in range(0, len(paths), REGION_BATCH):
            batch = paths[start:start + REGION_BATCH]
            crops = [crop for path in batch for crop in regions.crops(load_rgb(path))]
            chunks.append(desc.encode_queries(crops).reshape(len(batch), -1, desc.dim))
            bar.update(len(batch))
        bar.close()
        return np.concatenate(chunks) if chunks else np.zeros((0, len(regions.windows(2, 2)), desc.dim), np.float32)

    def copies(self, ctx: Ctx, method: MethodName, parent: CopyHits) -> CopyHits:
        run, metric = ctx.run, ctx.run.descriptor(method.base).metric
        codes = self.codes(ctx, method.base, query_paths(ctx, distractors=False))
        hits = search(run.search_index(method.base), codes, run.config.depth, metric)
        sources = row_ids(run.originals["file"], run.manifest["source"])  # copies' sources are all originals
        true_scores = best_pair_scores(metric, codes, run.database_codes(method.base)[sources])
        return CopyHits(hits.ids, hits.scores, np.asarray(true_scores, np.float64), complete=True)

    def distractors(self, ctx: Ctx, method: MethodName, parent: Candidates) -> Candidates:
        run, metric = ctx.run, ctx.run.descriptor(method.base).metric
        codes = self.codes(ctx, method.base, query_paths(ctx, distractors=True))
        hits = search(run.search_index(method.base), codes, parent.ids.shape[1], metric)
        return Candidates(hits.ids, hits.scores)


class Verify(Layer):
    trick = VERIFY

    def key(self, ctx: Ctx) -> tuple:
        return (VERIFY_TOP, verify.LONGEST_SIDE, verify.RATIO, verify.REPROJECTION_PX, verify.MIN_INLIERS,
                verify.SPAN, verify.BONUS, verify.MAX_FEATURES, verify.MATCHING, cv2.__version__)

    def rerank(self, ctx: Ctx, base: str, paths: Sequence[Path], found: Candidates, what: str) -> Candidates:
        """Each query's top ``VERIFY_TOP`` re-ordered by fused score; the rest as they were."""
        run = ctx.run
        known: dict[int, verify.Features] = {}  # database item -> its features, computed once per build

        def candidate(item: int) -> verify.Features:
            if item not in known:
                path = run.database_image(base, item)
                known[item] = verify.features(load_rgb(path)) if path is not None else verify.Features(
                    np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
            return known[item]

        ids, scores = found.ids.copy(), np.asarray(found.scores, np.float64).copy()
        top = min(VERIFY_TOP, ids.shape[1])
        bar = open_progress(ctx.progress, len(paths), f"{run.descriptor(base).label}: verifying {what}")
        for row, path in enumerate(paths):
            query = verify.features(load_rgb(path))
            head = ids[row, :top]
            counts = np.array([verify.inliers(query, candidate(int(i))) if i >= 0 else 0 for i in head])
            ids[row, :top], scores[row, :top] = verify.rerank(head, scores[row, :top], counts)
            bar.update(1)
        bar.close()
        return Candidates(ids, scores)

    def copies(self, ctx: Ctx, method: MethodName, parent: CopyHits) -> CopyHits:
        found = self.rerank(ctx, method.base, query_paths(ctx, distractors=False), parent, "copies")
        return CopyHits(found.ids, found.scores, parent.true_scores, complete=False)

    def distractors(self, ctx: Ctx, method: MethodName, parent: Candidates) -> Candidates:
        return self.rerank(ctx, method.base, query_paths(ctx, distractors=True), parent, "distractor queries")


class Norm(Layer):
    trick = NORM

    def needs(self, method: MethodName) -> tuple[tuple[str, tuple], ...]:
        return (("background", (method.base,)),)

    def key(self, ctx: Ctx) -> tuple:
        norm = ctx.run.normalisation
        return norm.beta, norm.first, norm.last

    def background(self, ctx: Ctx, base: str, codes: np.ndarray) -> np.ndarray:
        """Per query code: its mean similarity to the background set at the normalisation's ranks."""
        index = background_index(cache.read_npy(BackgroundOutputs(ctx.input("background", base).folder).codes))
        return background_similarity(codes, index, ctx.run.normalisation)

    def copies(self, ctx: Ctx, method: MethodName, parent: CopyHits) -> CopyHits:
        norm = ctx.run.normalisation
        shift = self.background(ctx, method.base, ctx.run.codes(method.base)[1])
        return CopyHits(parent.ids, normalise(parent.scores, shift, norm),
                        normalise(parent.true_scores[:, None], shift, norm)[:, 0], complete=False)

    def distractors(self, ctx: Ctx, method: MethodName, parent: Candidates) -> Candidates:
        codes = cache.read_npy(OpenSetOutputs(ctx.input("openset", method.base).folder).distractor_codes)
        shift = self.background(ctx, method.base, codes)
        return Candidates(parent.ids, normalise(parent.scores, shift, ctx.run.normalisation))


LAYERS: dict[Trick, Layer] = {layer.trick: layer for layer in (Regions(), Verify(), Norm())}

"""The experiment's stages, each cached on disk, and the engine that runs them.

A tour, in reading order:

- ``base``: what a stage is (``Stage``: kind, version, params, needs, key_parts, build) and
  ``Node``, one instance of a stage, such as ``embed[phash]``.
- ``engine``: derives each key from the stage's own parts and its inputs' keys, runs needs
  first, memoises, locks per instance, verifies through ``malle.io.cache.obtain`` and times.
- ``context``: ``RunContext``, what the stages of one experiment share (config, descriptors,
  the dataset's files) and their outputs read as tables.
- one module per stage, in the order a run needs them; its kind is its cache folder::

    samples/<key>/      originals/*.JPEG  originals.parquet  skipped.csv
    copies/<key>/       images/*.JPEG  manifest.parquet
    embed/<key>/        originals.npy  queries.npy  index.faiss               (one per method)
    references/<key>/   references.parquet  codes.npy  skipped.csv           (one per method; extra database items)
    search/<key>/       index.faiss  per_query.parquet  neighbour_ids.npy  neighbour_scores.npy   (one per method)
    distractors/<key>/  images/*.JPEG  manifest.parquet  skipped.csv         (open-set queries)
    openset/<key>/      predictions.parquet  pr_curve.parquet  distractors.npy   (one per method)
    calibrate/<key>/    calibration.json                                     (one per method; score -> P(copy))
    attribution/<key>/  per_query.parquet  summary.parquet                   (one per method)
    sweep/<key>/        images/*.JPEG  manifest.parquet  skipped.csv         (one per op and level)
    sweepscore/<key>/   (its meta: Recall@1 and @10)                         (one per method, op and level)

- ``registry``: ``STAGES``, every stage by kind.

``malle.lab.experiment.Experiment`` runs them for the CLI, the dashboard and the benchmarks;
``python -m malle stages`` prints the graph with each key and whether it is cached.
"""

from malle.lab.stages.base import Built, Ctx, Node, Stage, pixel_versions
from malle.lab.stages.context import RunContext
from malle.lab.stages.registry import STAGES
from malle.lab.stages.runner import StageGraphError, StageRunner

__all__ = ["STAGES", "Built", "Ctx", "StageRunner", "Node", "RunContext", "Stage", "StageGraphError", "pixel_versions"]

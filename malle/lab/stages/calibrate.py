"""Stage ``calibrate``: a method's score -> probability of a true copy, from its open-set predictions.

Fits ``malle.evaluation.calibration`` on the ``openset`` stage's pooled predictions (copies and distractor queries
alike), cross-fitted by query, so the folder's ``calibration.json`` holds the map for use, its expected calibration
error and reliability curve on held-back queries. Base and derived methods alike: both write the same predictions.
"""

from __future__ import annotations

from pathlib import Path

from malle.evaluation import calibration
from malle.io import cache
from malle.lab.stages.base import Ctx, Node, Stage
from malle.lab.stages.outputs import CalibrationOutputs, OpenSetOutputs


class Calibrate(Stage):
    kind = "calibrate"
    version = 2  # 2: ece and reliability of each query's best prediction too
    params = ("method",)

    def needs(self, ctx: Ctx) -> tuple[Node, ...]:
        return (Node("openset", (ctx.method,)),)

    def key_parts(self, ctx: Ctx) -> tuple:
        return calibration.FOLDS, calibration.BINS, calibration.SEED

    def build(self, ctx: Ctx, tmp: Path, meta: dict) -> None:
        predictions = cache.read_table(OpenSetOutputs(ctx.input("openset", ctx.method).folder).predictions)
        metric = ctx.desc.metric  # a derived method's is its base's
        fitted = calibration.calibrate(predictions, metric)
        cache.write_json(CalibrationOutputs(tmp).calibration, fitted.as_json())
        meta.update(method=ctx.method, items=fitted.n_predictions, ece=fitted.as_json()["ece"])


STAGE = Calibrate()

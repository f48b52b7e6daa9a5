"""What each stage leaves in its folder, named once: the stage that writes a file and every reader use these.

A stage's folder class lists its files as ``File`` attributes: on the class a ``File`` is the name (for docs and
listings), on an instance bound to a folder it is the path. ``SearchOutputs(built.folder).per_query`` is where
the ``search`` stage wrote its per-query table, whoever asks.

Meta that other stages or the results copy or read back is typed too: ``IndexMeta`` (what the ``search``
stage's index was, which a derived method's search repeats) and ``EmbedCost`` (how a method was run).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, overload


class File:
    """One file (or sub-folder) of a stage's folder."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, folder: None, owner: type) -> File: ...

    @overload
    def __get__(self, folder: StageOutputs, owner: type) -> Path: ...

    def __get__(self, folder: StageOutputs | None, owner: type) -> File | Path:
        return self if folder is None else folder.path / self.name

    def __str__(self) -> str:
        return self.name


class StageOutputs:
    """A stage's folder and the files it holds (subclasses declare them)."""

    kind: ClassVar[str]

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def files(cls) -> tuple[str, ...]:
        """The names of the files it declares, in declaration order."""
        return tuple(v.name for k, v in vars(cls).items() if isinstance(v, File))


class SamplesOutputs(StageOutputs):
    kind = "samples"
    originals = File("originals")  # the originals' images, re-encoded
    table = File("originals.parquet")
    skipped = File("skipped.csv")


class CopiesOutputs(StageOutputs):
    kind = "copies"
    images = File("images")
    manifest = File("manifest.parquet")


class EmbedOutputs(StageOutputs):
    kind = "embed"
    originals = File("originals.npy")
    queries = File("queries.npy")
    index = File("index.faiss")  # exact, over the originals alone
    originals_quality = File("originals_quality.npy")  # methods with a quality score (PDQ)
    queries_quality = File("queries_quality.npy")


class ReferencesOutputs(StageOutputs):
    kind = "references"
    table = File("references.parquet")
    codes = File("codes.npy")
    skipped = File("skipped.csv")


class SearchOutputs(StageOutputs):
    kind = "search"
    index = File("index.faiss")  # the configured index over the whole database
    per_query = File("per_query.parquet")
    neighbour_ids = File("neighbour_ids.npy")
    neighbour_scores = File("neighbour_scores.npy")


class DistractorsOutputs(StageOutputs):
    kind = "distractors"
    images = File("images")
    manifest = File("manifest.parquet")
    skipped = File("skipped.csv")


class OpenSetOutputs(StageOutputs):
    kind = "openset"
    predictions = File("predictions.parquet")
    pr_curve = File("pr_curve.parquet")
    distractor_codes = File("distractors.npy")  # a base method's codes of the distractor queries
    distractor_ids = File("distractor_ids.npy")  # a derived method's distractor candidates
    distractor_scores = File("distractor_scores.npy")


class CalibrationOutputs(StageOutputs):
    kind = "calibrate"
    calibration = File("calibration.json")  # one method's map, ece and reliability (malle.evaluation.calibration)


class AttributionOutputs(StageOutputs):
    kind = "attribution"
    per_query = File("per_query.parquet")
    summary = File("summary.parquet")


class BackgroundOutputs(StageOutputs):
    kind = "background"
    codes = File("codes.npy")
    table = File("background.parquet")
    skipped = File("skipped.csv")


class SweepOutputs(StageOutputs):
    kind = "sweep"
    images = File("images")
    manifest = File("manifest.parquet")
    skipped = File("skipped.csv")


class SweepScoreOutputs(StageOutputs):
    kind = "sweepscore"


OUTPUTS: dict[str, type[StageOutputs]] = {cls.kind: cls for cls in StageOutputs.__subclasses__()}


class Meta:
    """Typed meta: written with ``as_meta``, read back with ``from_meta`` (keys a stage cached before a field
    existed take the field's default)."""

    def as_meta(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    @classmethod
    def from_meta(cls, meta: dict[str, Any]):
        return cls(**{f.name: meta[f.name] for f in fields(cls) if f.name in meta})  # type: ignore[arg-type]


@dataclass(frozen=True)
class IndexMeta(Meta):
    """The ``search`` stage's index, recorded once and repeated by a derived method's search."""

    index: str
    index_reason: str
    index_exact: bool
    index_seconds: float
    index_bytes: int
    database_size: int
    r10_vs_exact: float = 1.0
    overlap10_vs_exact: float = 1.0


NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class EmbedCost(Meta):
    """How a method was run and what encoding cost (the ``embed`` stage's meta that ``costs.csv`` reports).
    Stages cached before a field was recorded say so rather than guess."""

    label: str
    family: str
    dim: int
    metric: str
    precision: str
    images_per_s: float
    runtime: str = NOT_RECORDED
    cpu: str = NOT_RECORDED


def low_quality_share(embed_meta: dict[str, Any]) -> float:
    """The share of codes below the method's quality threshold; NaN for a method without a quality score."""
    return embed_meta.get("low_quality_share", float("nan"))

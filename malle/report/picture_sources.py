"""Where the failure gallery's pictures come from, as downscaled JPEG data URIs.

* ``CachedImages``: the cache of the experiment that made the run (the dashboard's live run, or the CLI's
  ``--cache`` when it still holds the run): the very files the run searched, and the op charged with each miss.
* ``ReplayedImages``: the dataset folder alone. Each copy's recorded edits (manifest.csv keeps every op's
  parameters) are applied again to its original, as the run made it; the op charged is known only for
  copies of one edit.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from functools import cached_property
from pathlib import Path

from malle.dashboard.shared import THUMB_PX, image_thumbnail, thumbnail_jpeg
from malle.data.sampling import demo_root
from malle.errors import MalleError
from malle.io.images import encode_jpeg, load_rgb
from malle.lab.experiment import Experiment, ExperimentConfig, Results
from malle.ops.chains import apply_chain, chain_from_json
from malle.ops.composites import OpContext
from malle.ops.copy_maker import COPY_JPEG_QUALITY
from malle.report.run_folder import RunFolder


def uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def file_uri(path: Path | None) -> str | None:
    """A thumbnail of an image file; None when there is no such readable image."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return uri(thumbnail_jpeg(path, THUMB_PX))
    except (MalleError, OSError):
        return None


@dataclass
class CachedImages:
    """The run's own files, in the cache of the experiment that made it."""

    experiment: Experiment
    charges: dict[str, dict[str, str]] = field(default_factory=dict)  # method -> {missed query: op(s) charged}
    origin: str = "the run's cache"

    @classmethod
    def of(cls, results: Results) -> CachedImages:
        return cls(results.experiment, {m: _charged(results.charged(m)) for m in results.methods})

    def query(self, file: str) -> str | None:
        return file_uri(self.experiment.copies_dir / file)

    def original(self, file: str) -> str | None:
        return file_uri(self.experiment.originals_dir / file)

    def database_item(self, method: str, file: str) -> str | None:
        database = self.experiment.database(method)["file"]
        where = database.index[database == file]
        return file_uri(self.experiment.database_image(method, int(where[0]))) if len(where) else None


@dataclass
class ReplayedImages:
    """Originals from the dataset folder, copies re-made by applying their recorded edits again."""

    run: RunFolder
    data_root: Path
    charges: dict[str, dict[str, str]] = field(default_factory=dict)  # none known without the cache
    origin: str = ("the dataset folder: each copy re-made from its original by applying its recorded edits again "
                   "(the run's cache is not at hand)")

    @cached_property
    def _sources(self) -> dict[str, Path]:
        originals = self.run.originals
        return {f: self.data_root / p for f, p in zip(originals["file"], originals["source_path"])}

    @cached_property
    def _copies(self) -> dict[str, tuple[str, str]]:
        manifest = self.run.manifest
        return {f: (s, c) for f, s, c in zip(manifest["file"], manifest["source"], manifest["chain"])}

    def query(self, file: str) -> str | None:
        source, chain = self._copies.get(file, (None, None))
        if source not in self._sources or not isinstance(chain, str):
            return None
        try:
            made = apply_chain(load_rgb(self._sources[source]), chain_from_json(chain), OpContext(self.data_root))
            # Stored as the run stores copies, so the thumbnail shows the same JPEG artefacts.
            return uri(image_thumbnail(load_rgb(encode_jpeg(made, COPY_JPEG_QUALITY)), THUMB_PX))
        except (MalleError, OSError, ValueError):
            return None

    def original(self, file: str) -> str | None:
        return file_uri(self._sources.get(file))

    def database_item(self, method: str, file: str) -> str | None:
        return self.original(file)  # extra references (--db-distractors, --db-extra) are left out


Images = CachedImages | ReplayedImages


def _charged(table) -> dict[str, str]:
    return dict(zip(table["query"], table["charged"].str.replace("|", " and ", regex=False)))


def reopen(run: RunFolder, cache_root: Path | str | None) -> tuple[Images | None, str]:
    """The best source the machine has: the run's cache, else its dataset; (None, why) when neither is here."""
    names = {f.name for f in dataclass_fields(ExperimentConfig)}
    why = ""
    try:
        config = ExperimentConfig.from_dict({k: v for k, v in run.config.items() if k in names})
        exp = Experiment(config, cache_root)
        if exp.is_cached("samples") and exp.is_cached("copies") and list(exp.methods) == run.methods and all(
                exp.is_cached("search", m) and exp.is_cached("attribution", m) for m in exp.methods):
            return CachedImages.of(Results(exp, run.per_query)), ""
        why = f"the cache at {exp.root} does not hold this run (pass the run's --cache)"
    except (MalleError, KeyError, TypeError, ValueError) as err:
        why = f"the experiment cannot be re-opened from config.json ({err})"
    data = Path(run.config["data"]) if run.config.get("data") else demo_root()
    if data.is_dir() and all((data / p).is_file() for p in run.originals["source_path"].head(20)):
        return ReplayedImages(run, data), why
    return None, f"{why}, and the dataset folder {data} is not here"


__all__ = ["CachedImages", "Images", "ReplayedImages", "reopen"]

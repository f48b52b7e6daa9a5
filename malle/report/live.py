"""The report of a run on screen (the dashboard's button): its tables written as the CLI writes them, with the
severity sweeps already computed (as ``malle severity --out`` writes them), then built."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from malle.io import cache
from malle.lab.experiment import Experiment
from malle.lab.results import Results
from malle.ops.severity import GRIDS, breaking_points
from malle.report.build import Progress, build
from malle.report.pdf import print_pdf
from malle.report.picture_sources import CachedImages

PDF_SHARE = 0.3  # of the progress bar: printing takes about as long as building the HTML


@dataclass(frozen=True)
class ReportFiles:
    html: bytes
    pdf: bytes


def report_files(results: Results, progress: Progress | None = None) -> ReportFiles:
    """HTML and PDF of ``results``: the same tables ``malle run --out`` writes, so the same numbers."""
    say = progress or (lambda what, share: None)
    with tempfile.TemporaryDirectory(prefix="malle-report-") as tmp:
        say("Writing the run's tables…", 0.0)
        results.write(Path(tmp))
        write_computed_sweeps(results.experiment, Path(tmp))
        report = build(tmp, CachedImages.of(results),
                       progress=lambda what, share: say(what, share * (1 - PDF_SHARE)))
    say("Printing the PDF…", 1 - PDF_SHARE)
    pdf = print_pdf(report.html)
    say("Done", 1.0)
    return ReportFiles(report.html.encode("utf-8"), pdf)


def sweeps_cached(exp: Experiment, ops: list[str]) -> bool:
    """Whether every (method, op, level) of these sweeps is in the cache already."""
    return all(exp.is_cached("sweepscore", m, op, level) for m in exp.methods for op in ops
               for level in range(len(GRIDS[op].values)))


def computed_sweep_ops(exp: Experiment) -> list[str]:
    """The ops whose sweeps are cached for every method (the Robustness page computed them), in registry order."""
    return [op for op in GRIDS if sweeps_cached(exp, [op])]


def write_computed_sweeps(exp: Experiment, out: Path) -> list[Path]:
    """severity.csv and breaking_points.csv of the sweeps already computed, read from the cache (nothing is swept
    here: a report is not the place to start minutes of work); none when no sweep is complete."""
    ops = computed_sweep_ops(exp)
    if not ops:
        return []
    table = exp.severity(ops)
    cache.write_table(out / "severity.csv", table)
    cache.write_table(out / "breaking_points.csv", breaking_points(table))
    return [out / "severity.csv", out / "breaking_points.csv"]

"""The report of a run on screen (the dashboard's button): its tables written as the CLI writes them, then built."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from malle.lab.results import Results
from malle.report.build import Progress, build
from malle.report.picture_sources import CachedImages
from malle.report.pdf import print_pdf

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
        report = build(tmp, CachedImages.of(results),
                       progress=lambda what, share: say(what, share * (1 - PDF_SHARE)))
    say("Printing the PDF…", 1 - PDF_SHARE)
    pdf = print_pdf(report.html)
    say("Done", 1.0)
    return ReportFiles(report.html.encode("utf-8"), pdf)

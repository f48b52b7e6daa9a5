"""A report of a finished run for stakeholders: one self-contained HTML file, and a PDF of it.

``build(OUT)`` reads the folder ``malle run/demo --out OUT`` (and ``malle severity --out OUT``) wrote; images
for the failure gallery come from the run's cache, else its dataset (``picture_sources``). Charts are SVG rendered
offline (vl-convert), images are data URIs: the file makes no network request. ``print_pdf`` prints it with
headless Chromium through Playwright.

Modules: ``run_folder`` (reading OUT), ``html`` (page pieces), ``charts``, ``summary`` (headline, methods,
Recall@K), ``details`` (edits, open set), ``gallery`` (failures), ``picture_sources`` (the gallery's pictures),
``provenance``, ``build``, ``pdf``, ``live`` (the dashboard's button).
"""

from malle.report.build import DOWNSCALED, Report, build
from malle.report.pdf import PdfUnavailable, print_pdf
from malle.report.picture_sources import CachedImages, ReplayedImages, reopen
from malle.report.run_folder import RunFolder

__all__ = ["DOWNSCALED", "CachedImages", "PdfUnavailable", "ReplayedImages", "Report", "RunFolder", "build",
           "print_pdf", "reopen"]

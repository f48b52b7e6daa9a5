"""Print the report to PDF with headless Chromium (Debian's ``chromium``) driven by Playwright.

Both are runtime needs of ``--pdf`` only: the HTML report needs neither.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from malle.errors import MalleError
from malle.io.cache import write_bytes

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class PdfUnavailable(MalleError):
    """Chromium or Playwright is missing, so no PDF can be printed here."""


def chromium_path() -> Path:
    """``$MALLE_CHROMIUM``, else Debian's chromium on the PATH; a one-line error naming the fix if neither."""
    found = os.environ.get("MALLE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).is_file():
        raise PdfUnavailable("the PDF needs headless Chromium: install it (apt-get install chromium) "
                             "or set MALLE_CHROMIUM to its path; the HTML report works without it")
    return Path(found)


def print_pdf(html: str, target: Path | str | None = None) -> bytes:
    """The PDF of ``html`` (A4, backgrounds printed); also written to ``target`` when given."""
    executable = chromium_path()
    # Playwright's sync API refuses a thread that already runs an event loop (or another sync Playwright,
    # as a caller's own browser): a thread of its own has neither.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="malle-pdf") as pool:
        data = pool.submit(_print, html, executable).result()
    if target is not None:
        write_bytes(Path(target), data)
    return data


def _print(html: str, executable: Path) -> bytes:
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise PdfUnavailable("the PDF needs the 'report' extra (Playwright): pip install 'malle[report]'") from None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                # Offline by construction: any request the page tries is refused, never fetched.
                page.route("**/*", lambda route: route.abort())
                page.set_content(html, wait_until="load")
                data = page.pdf(format="A4", print_background=True, prefer_css_page_size=True)
            finally:
                browser.close()
    except PlaywrightError as err:
        raise PdfUnavailable(f"Chromium could not print the PDF: {str(err).splitlines()[0]}") from None
    return data

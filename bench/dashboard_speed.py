"""Dashboard speed: the first Overview on a fresh demo, every other page's first visit, changed settings, and page
render times once cached.

    python bench/dashboard_speed.py [--repeats 3] [--after 30]

1. Fresh: a new cache that only the install step has touched (``malle methods --prepare``, which the README's
   install line runs: the default methods exported and checked, timed here and reported); a real ``malle
   dashboard`` (``streamlit run`` with the worker pool started first) on loopback and headless Chromium open the
   Overview, which computes what it shows (samples, copies,
   embeddings, search, with progress per stage). Target (issues 15 and 23): under 20 s. ``--no-prepare`` skips
   the install step: the first Overview then exports the models too.
2. First visits: from ``--after`` seconds after the Overview is drawn (the background computes the other pages'
   data meanwhile), every other page in turn, by its sidebar link in the same session, each timed until its
   script run is over. Target (issue 23): each under 10 s.
3. Changed settings, once the background is quiet: adding an op on Robustness, then another seed in the sidebar;
   each timed until drawn, with the stages it built (new cache entries by kind), which must be only those whose
   keys the change moves.
4. Cached: every page's script run (the frame plus the page) timed in-process with Streamlit's AppTest, best of
   ``--repeats``, as a ratio against a reference page measured in the same run: a minimal app that renders a
   title and a 5x5 table.

Names the CPU and its kind, and records the load average with every figure (the machine may be shared).
Writes bench/results/dashboard_speed.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, publish  # noqa: E402  (bench/ is on sys.path when run as a script)
from streamlit.testing.v1 import AppTest  # noqa: E402

from harness.browser import CHROMIUM, chromium, settle, streamlit_server  # noqa: E402
from malle.data.sampling import DEMO_DISTRACTORS, DEMO_N  # noqa: E402
from malle.inference.cpu import cpu_features  # noqa: E402
from malle.io import cache  # noqa: E402

PAGES_DIR = ROOT / "app_pages"
FIRST_OVERVIEW_TARGET_S = 20.0  # issues 15 and 23
FIRST_VISIT_TARGET_S = 10.0  # issue 23
# The sidebar's pages after the Overview, in their order (streamlit_app.PAGES' titles).
TOUR = ("Augmentation lab", "Per-transformation breakdown", "Method comparison", "Failure gallery", "Robustness",
        "Detection", "Search", "Bank")
QUIET_S, QUIET_LIMIT_S = 20.0, 900.0  # the background is quiet when the cache gains nothing for QUIET_S
REFERENCE_APP = ("import pandas as pd\nimport streamlit as st\n"
                 "st.title('Reference')\nst.dataframe(pd.DataFrame([[1]*5]*5))\n")


def load() -> float:
    return os.getloadavg()[0]


def finished_stages(cache_root: Path) -> set[str]:
    """``kind/key`` of every finished stage in the cache."""
    return {f"{e.kind}/{e.folder.name}" for e in cache.entries(cache_root)}


def built_kinds(before: set[str], after: set[str]) -> str:
    counts = Counter(entry.split("/")[0] for entry in after - before)
    return ", ".join(f"{kind} ×{n}" for kind, n in sorted(counts.items())) or "nothing"


def wait_quiet(cache_root: Path) -> float:
    """Wait until the cache gains no finished stage for ``QUIET_S``; returns the seconds waited."""
    start, seen, since = time.perf_counter(), finished_stages(cache_root), time.perf_counter()
    while time.perf_counter() - since < QUIET_S and time.perf_counter() - start < QUIET_LIMIT_S:
        time.sleep(2)
        now = finished_stages(cache_root)
        if now != seen:
            seen, since = now, time.perf_counter()
    return time.perf_counter() - start


def install_step(cache_root: Path) -> list[str]:
    """Run the README's install step (``malle methods --prepare``) into the fresh cache, timed."""
    before, start = load(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "malle", "methods", "--prepare"], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "MALLE_CACHE": str(cache_root)})
    return [f"Install step `malle methods --prepare` (the default methods exported and checked into the fresh "
            f"cache): {time.perf_counter() - start:.1f} s; load average (1 min) {before:.1f} at the start", ""]


def timed_run(page, action) -> float:
    start = time.perf_counter()
    action()
    settle(page, timeout_ms=900_000)
    return time.perf_counter() - start


def page_error(page) -> str:
    """The first line of an exception the page shows, or "" (a time means nothing for a page that failed)."""
    shown = page.locator('[data-testid="stException"]')
    return shown.first.inner_text().strip().splitlines()[0][:160] if shown.count() else ""


def visit(page, title: str) -> float:
    link = page.locator('[data-testid="stSidebarNav"] a', has_text=title).first
    return timed_run(page, link.click)


def add_op(page, label: str, op: str) -> None:
    box = page.locator('[data-testid="stMultiSelect"]', has_text=label).first
    box.locator("input").click()
    page.keyboard.type(op)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")


def set_seed(page, seed: int) -> None:
    field = page.get_by_label("Seed")
    field.fill(str(seed))
    field.press("Enter")


def browser_figures(cache_root: Path, after_s: float) -> list[str]:
    """Fresh Overview, the tour of first visits, and the changed settings, in one server and one session."""
    lines = []
    log = ROOT / "test-output" / "bench-streamlit.log"
    with streamlit_server(ROOT / "streamlit_app.py", cache_root, log, launcher=True) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        before = load()
        start = time.perf_counter()
        page.goto(url)
        settle(page, timeout_ms=900_000)
        page.get_by_text("Recall@K measured in this experiment").wait_for(timeout=60_000)
        fresh = time.perf_counter() - start
        drawn = time.perf_counter()
        verdict = "met" if fresh < FIRST_OVERVIEW_TARGET_S else f"missed by {fresh - FIRST_OVERVIEW_TARGET_S:.1f} s"
        lines += [f"Time to the first Overview on a fresh demo (samples, copies, embed, search): **{fresh:.1f} s** "
                  f"(target under {FIRST_OVERVIEW_TARGET_S:.0f} s: {verdict}); load average (1 min) {before:.1f} at "
                  f"the start, {load():.1f} at the end", ""]
        time.sleep(max(0.0, after_s - (time.perf_counter() - drawn)))
        lines += [f"First visits, in turn from {after_s:.0f} s after the Overview was drawn (the background computes "
                  f"meanwhile); target under {FIRST_VISIT_TARGET_S:.0f} s each", "",
                  "| page | first visit s | target | load (1 min) |", "|---|---|---|---|"]
        for title in TOUR:
            seconds = visit(page, title)
            mark = "met" if seconds < FIRST_VISIT_TARGET_S else "missed"
            mark = f"failed: {error}" if (error := page_error(page)) else mark
            lines.append(f"| {title} | {seconds:.1f} | {mark} | {load():.1f} |")
        lines += ["", *changed_settings(page, cache_root)]
    return lines


def changed_settings(page, cache_root: Path) -> list[str]:
    waited = wait_quiet(cache_root)
    lines = [f"Changed settings, once the background was quiet ({waited:.0f} s after the tour): the time until "
             "drawn, and the stages built meanwhile (new cache entries by kind)", "",
             "| change | s | stages built | load (1 min) |", "|---|---|---|---|"]
    visit(page, "Robustness")
    for change, action in (("Robustness: add the blur op", lambda: add_op(page, "Ops", "blur")),
                           ("Overview: seed 0 → 1", None)):
        if action is None:
            visit(page, "Overview")
            action = lambda: set_seed(page, 1)  # noqa: E731
        before = finished_stages(cache_root)
        seconds = timed_run(page, action)
        built = built_kinds(before, finished_stages(cache_root))
        built = f"failed: {error}; {built}" if (error := page_error(page)) else built
        lines.append(f"| {change} | {seconds:.1f} | {built} | {load():.1f} |")
    return lines + [""]


def best_run_seconds(app: AppTest, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        app.run()
        times.append(time.perf_counter() - start)
        assert not app.exception, app.exception
    return min(times)


def page_seconds(repeats: int) -> tuple[float, dict[str, float]]:
    reference = best_run_seconds(AppTest.from_string(REFERENCE_APP, default_timeout=60), repeats)
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=600)
    app.run()  # loads the cached experiment into this process, as a server does once
    pages = {}
    for path in sorted(PAGES_DIR.glob("*.py")):
        app.switch_page(str(path.relative_to(ROOT)))
        pages[path.stem] = best_run_seconds(app, repeats)
    return reference, pages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--after", type=float, default=30.0, help="seconds after the Overview before the tour")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "results" / "dashboard_speed.md")
    parser.add_argument("--no-prepare", dest="prepare", action="store_false",
                        help="leave out the install step (malle methods --prepare): a cache nothing has touched")
    args = parser.parse_args()
    cache_root = Path(tempfile.mkdtemp(prefix="malle-dash-bench-"))
    os.environ["MALLE_CACHE"] = str(cache_root)
    cpu = cpu_features()
    lines = [f"# Dashboard speed (built-in demo: {DEMO_N} originals, {DEMO_DISTRACTORS} distractor queries, "
             "default methods)", "", f"Machine: {machine()}", f"CPU kind: {cpu.kind} ({cpu.describe()})", ""]
    lines += install_step(cache_root) if args.prepare else ["Install step: skipped (--no-prepare): the first "
                                                            "Overview exports the models itself", ""]
    if CHROMIUM.exists():
        lines += browser_figures(cache_root, args.after)
    else:
        lines += ["Time to the first Overview and first visits: skipped (no /usr/bin/chromium)", ""]
    reference, pages = page_seconds(args.repeats)
    lines += [f"Cached page runs, best of {args.repeats} (frame + page, in-process AppTest); reference app: "
              f"{reference * 1000:.0f} ms; load (1 min) {load():.1f}", "", "| page | ms | ratio to reference |",
              "|---|---|---|"]
    lines += [f"| {name} | {sec * 1000:.0f} | {sec / reference:.1f}× |" for name, sec in pages.items()]
    publish(lines, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

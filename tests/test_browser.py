"""A real browser against a real ``streamlit run`` on loopback.

Debian's headless Chromium, driven by Playwright, visits every page of the dashboard on the cached demo
experiment at the two screen sizes stakeholders use (1366 × 768 and 1600 × 1000) and checks that it reads
right: no table scrolls sideways, every chart's x axis labels every column its data has (the spec and data
are read from the messages the server sends the page, the labels from what Vega drew), and the Failure
gallery opens on failures. It saves each page's screenshot to ``test-output/screenshots/`` and, at
1600 × 1000, a small copy to ``docs/screenshots/`` for the README. Other tests change an op in the
Augmentation lab, upload images on the Search page and move the Detection threshold.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

import pytest

from harness.browser import (
    CHROMIUM,
    DRAWN_X_LABELS_JS,
    ROOT,
    SIDEWAYS_TABLES_JS,
    ForwardMessages,
    chromium,
    discrete_x_columns,
    listening_addresses,
    open_expanders,
    settle,
    small_png,
    streamlit_server,
    wait_for_charts,
)

SHOTS = ROOT / "test-output" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
PAGES = {
    "overview": ("", "Overview"),
    "augmentation_lab": ("augmentation_lab", "Augmentation lab"),
    "per_transformation": ("per_transformation", "Per-transformation breakdown"),
    "method_comparison": ("method_comparison", "Method comparison"),
    "failure_gallery": ("failure_gallery", "Failure gallery"),
    "robustness": ("robustness", "Robustness"),
    "detection": ("detection", "Detection"),
    "search": ("search", "Search"),
    "bank": ("bank", "Bank"),
}
VIEWPORTS = {"1366x768": (1366, 768), "1600x1000": (1600, 1000)}
DOCS_VIEWPORT = "1600x1000"  # the README's screenshots

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian chromium not installed (bash scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def demo_bank(tmp_path_factory, demo_photos):
    """A bank the Bank page opens: photos added with their images, and the same codes imported from a hash list
    (items without a thumbnail)."""
    from malle.bank import Bank
    from malle.bank.hashlist import export_rows, import_rows

    folder = tmp_path_factory.mktemp("dashboard-bank") / "bank"
    bank = Bank.open(folder)
    try:
        bank.create_collection("photos", "phash")
        bank.add_files("photos", demo_photos[:8])
        hash_list = folder.parent / "partner.csv"
        hash_list.write_text(export_rows(bank, "photos"))
        bank.create_collection("partner_list", "phash")
        import_rows(bank, "partner_list", hash_list)
    finally:
        bank.close()
    return folder


@pytest.fixture(scope="module")
def app_url(demo_cache, demo_bank):
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Served as a user starts it: no test-only override of where ResNet-50 weights are. The bank is opened the
    # way a user points the dashboard at one.
    env = {"MALLE_BANK": str(demo_bank), "MALLE_ALLOWED_ROOTS": os.pathsep.join([str(demo_bank.parent), str(ROOT)])}
    with streamlit_server(ROOT / "streamlit_app.py", demo_cache, SHOTS.parent / "streamlit.log",
                          drop_env=("MALLE_RESNET50_WEIGHTS",), extra_env=env) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright.sync_api")
    with chromium() as instance:
        yield instance


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1500})
    yield context.new_page()
    context.close()


def assert_no_exception(page, where: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()}"


def open_page(page, app_url: str, name: str) -> None:
    path, title = PAGES[name]
    page.goto(f"{app_url}/{path}")
    settle(page)
    assert page.locator("h1").first.inner_text().strip() == title
    assert_no_exception(page, name)


def test_server_listens_on_loopback_only(app_url):
    """Started as a user starts it (no --server.address), it must not listen on every interface."""
    assert listening_addresses(urlparse(app_url).port) == {"127.0.0.1"}


def chart_problems(name: str, messages: ForwardMessages, page) -> tuple[list[str], int]:
    """Each discrete x axis whose visible labels are fewer than its data's columns; and how many axes were read."""
    expected = [discrete_x_columns(spec, datasets) for spec, datasets in messages.charts()]
    drawn = page.evaluate(DRAWN_X_LABELS_JS)
    assert len(drawn) == len(expected), f"{name}: {len(drawn)} charts drawn, {len(expected)} sent"
    problems, axes = [], 0
    for i, (columns, axes_drawn) in enumerate(zip(expected, drawn), start=1):
        assert len(axes_drawn) == len(columns), f"{name} chart {i}: {len(axes_drawn)} discrete x axes for {columns}"
        for n_columns, (scale_values, visible) in zip(columns, axes_drawn):
            axes += 1
            if not n_columns == scale_values == visible:
                problems.append(f"{name} chart {i}: {n_columns} data columns, {scale_values} on the scale, "
                                f"{visible} labels drawn")
    return problems, axes


def failures_shown(page) -> int:
    text = page.locator("[data-testid='stMain']").first.inner_text()
    found = re.search(r"(\d+) failures among \d+ queries", text)
    assert found, "the Failure gallery says how many failures it shows"
    return int(found.group(1))


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_every_page_reads_right(browser, app_url, viewport):
    """At each screen size, every page: no exception, no table scrolling sideways, every chart column labelled;
    the Failure gallery's first view shows failures. Screenshots of each page are saved (and, at 1600 × 1000,
    copied small into docs/screenshots)."""
    width, height = VIEWPORTS[viewport]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    messages = ForwardMessages(page)
    problems, axes = [], 0
    try:
        for name in PAGES:
            messages.clear()
            open_page(page, app_url, name)
            if name == "search":  # show what a search says: one of the experiment's copies, searched
                page.get_by_text("A copy from the experiment").click()
                settle(page)
                assert_no_exception(page, "search of a copy")
            wait_for_charts(page)
            problems += [f"{name}: {table} scrolls sideways" for table in page.evaluate(SIDEWAYS_TABLES_JS)]
            found, read = chart_problems(name, messages, page)
            problems, axes = problems + found, axes + read
            if name == "failure_gallery":
                assert failures_shown(page) > 0, "the Failure gallery opens on a view with failures"
                assert page.locator('[data-testid="stImage"]').count() >= 5  # query, original, neighbours
            shot = SHOTS / viewport / f"{name}.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            if viewport == DOCS_VIEWPORT:
                small_png(shot, DOCS_SHOTS / f"{name}.png")
            if open_expanders(page):  # the tables inside them, now drawn
                wait_for_charts(page)
                problems += [f"{name} (expanded): {table} scrolls sideways"
                             for table in page.evaluate(SIDEWAYS_TABLES_JS)]
    finally:
        context.close()
    assert not problems, "\n".join(problems)
    assert axes >= 5, "the heatmap, the chain-length chart and the Robustness panels have discrete x axes"


def _modified_image_src(page) -> str:
    return page.locator('[data-testid="stImage"]', has_text="Modified").locator("img").get_attribute("src")


def test_changing_an_op_changes_the_modified_image(page, app_url):
    open_page(page, app_url, "augmentation_lab")
    before = _modified_image_src(page)
    ops = page.locator('[data-testid="stMultiSelect"]', has_text="Ops, in order of application")
    ops.locator("input").click()
    page.keyboard.type("occlude")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    settle(page)
    assert_no_exception(page, "augmentation lab after adding an op")
    assert "occlude" in page.locator('[data-testid="stCode"]').first.inner_text()
    assert _modified_image_src(page) != before


def test_search_upload_shows_neighbours_and_rejects_non_images(page, app_url, demo_photos, tmp_path):
    open_page(page, app_url, "search")
    page.locator('input[type="file"]').set_input_files(str(demo_photos[3]))
    settle(page)
    assert_no_exception(page, "search after an image upload")
    text = page.locator("section.main, [data-testid='stMain']").first.inner_text()
    assert "EfficientNet-Lite2" in text and "pHash" in text
    assert "copy" in text and "calibrated" in text  # a verdict at the calibrated threshold, which is shown
    page.screenshot(path=str(SHOTS / "search_upload.png"), full_page=True)

    fake = tmp_path / "notes.jpg"
    fake.write_text("not a picture")
    page.locator('input[type="file"]').set_input_files(str(fake))
    settle(page)
    assert_no_exception(page, "search after a non-image upload")
    assert page.get_by_text("Cannot use notes.jpg").count() == 1


def _operating_point(page) -> str:
    return page.get_by_text("At cosine similarity").first.inner_text()


def test_moving_the_precision_target_moves_the_threshold(page, app_url):
    open_page(page, app_url, "detection")
    before = _operating_point(page)
    slider = page.get_by_role("slider").first
    slider.focus()
    for _ in range(15):  # 0.90 -> 0.75 in steps of 0.01
        page.keyboard.press("ArrowLeft")
    settle(page)
    assert_no_exception(page, "detection after moving the target precision")
    shown = page.locator('[data-testid="stSlider"]', has_text="Target precision").first.inner_text()
    assert "0.75" in shown
    assert _operating_point(page) != before
    page.screenshot(path=str(SHOTS / "detection_threshold.png"), full_page=True)


def test_bank_says_copy_at_its_threshold_and_marks_hash_only_items(page, app_url, demo_photos):
    open_page(page, app_url, "bank")
    page.locator('input[type="file"]').set_input_files(str(demo_photos[2]))  # an image of the collection
    settle(page)
    assert_no_exception(page, "bank after an upload")
    text = page.locator("[data-testid='stMain']").first.inner_text()
    assert "copy: 1 item(s) at the collection's threshold (Hamming distance ≤ 14/64 bits)" in text
    page.get_by_role("tab", name="Browse items").click()
    page.wait_for_timeout(500)
    text = page.locator("[data-testid='stMain']").first.inner_text()
    assert "imported from a hash list" in text and text.count("hash only") == 8  # partner_list: codes, no images

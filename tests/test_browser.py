"""A real browser against a real ``streamlit run`` on loopback.

Debian's headless Chromium, driven by Playwright, visits every page of the
dashboard on the cached demo experiment, changes an op in the Augmentation lab,
uploads images on the Search page, and saves a screenshot of each page to
``test-output/screenshots/``.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from harness.browser import CHROMIUM, ROOT, chromium, listening_addresses, settle, streamlit_server

SHOTS = ROOT / "test-output" / "screenshots"
PAGES = {
    "overview": ("", "Overview"),
    "augmentation_lab": ("augmentation_lab", "Augmentation lab"),
    "per_transformation": ("per_transformation", "Per-transformation breakdown"),
    "method_comparison": ("method_comparison", "Method comparison"),
    "failure_gallery": ("failure_gallery", "Failure gallery"),
    "robustness": ("robustness", "Robustness"),
    "detection": ("detection", "Detection"),
    "search": ("search", "Search"),
}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian chromium not installed (bash scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def app_url(demo_cache):
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Served as a user starts it: no test-only override of where ResNet-50 weights are.
    with streamlit_server(ROOT / "streamlit_app.py", demo_cache, SHOTS.parent / "streamlit.log",
                          drop_env=("MALLE_RESNET50_WEIGHTS",)) as url:
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


def test_every_page_renders_without_exception(page, app_url):
    for name in PAGES:
        open_page(page, app_url, name)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


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

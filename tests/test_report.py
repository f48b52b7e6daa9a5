"""The stakeholder report (issue 18): ``malle report OUT`` and the Overview's "Download report" button.

Real runs of the demo experiment (open set and closed set), a real severity sweep, the real CLI, Debian's
headless Chromium through Playwright for the page and the PDF, and poppler's pdftotext/pdfinfo.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import pytest

from harness.browser import CHROMIUM, ROOT, chromium, settle, streamlit_server
from malle.cli import build_parser, main
from malle.cli.options import config_from_args
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.report import CachedImages, ReplayedImages, RunFolder, build, live, palette, reopen
from malle.report.provenance import reproduce_command

SECTIONS = ["Headline", "Methods", "Recall@K", "Edits", "Open set", "Failures", "Provenance"]
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed (scripts/test.sh)")
needs_poppler = pytest.mark.skipif(not shutil.which("pdftotext"),
                                   reason="poppler-utils not installed (scripts/test.sh)")


@pytest.fixture(scope="module")
def open_run(demo_results, tmp_path_factory) -> Path:
    """The dashboard's default experiment (with distractor queries) written as `malle demo --out` writes it."""
    out = tmp_path_factory.mktemp("open-run")
    demo_results.write(out)
    return out


@pytest.fixture(scope="module")
def closed_run(demo_results, demo_env, tmp_path_factory) -> Path:
    """The same experiment closed-set (--distractors 0): every stage but the open set's comes from the cache."""
    out = tmp_path_factory.mktemp("closed-run")
    Experiment(replace(demo_results.config, distractors=0), demo_env).run().write(out)
    return out


@pytest.fixture(scope="module")
def open_report(open_run, demo_env, tmp_path_factory) -> tuple[Path, Path]:
    """(HTML, PDF) made by the command line, images from the run's cache."""
    folder = tmp_path_factory.mktemp("open-report")
    html, pdf = folder / "report.html", folder / "report.pdf"
    assert main(["report", str(open_run), "--html", str(html), "--pdf", str(pdf), "--cache", str(demo_env)]) == 0
    return html, pdf


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("playwright.sync_api")
    with chromium() as instance:
        yield instance


def load(browser, html: Path):
    """The report opened in Chromium: (page, requests other than the file itself, console errors)."""
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html.as_uri(), wait_until="load")
    page.wait_for_timeout(300)
    others = [u for u in requests if u != html.as_uri() and not u.startswith("data:")]
    return page, others, errors


@needs_chromium
def test_the_html_opens_with_no_console_error_and_no_network_request(browser, open_report):
    page, requests, errors = load(browser, open_report[0])
    assert errors == []
    assert requests == []
    assert [h.inner_text() for h in page.locator("h2").all()] == SECTIONS
    images = page.locator("#failures img")
    assert images.count() > 0  # the gallery's pictures came from the cache, inline
    assert all(src.startswith("data:image/jpeg;base64,") for src in
               page.locator("img").evaluate_all("els => els.map(e => e.getAttribute('src'))"))
    assert page.locator("#edits svg").count() >= 3 and page.locator("#openset svg").count() == 1
    page.close()


@needs_chromium
def test_every_r1_and_uap_in_the_report_equals_the_csvs(browser, open_run, open_report):
    page, _, _ = load(browser, open_report[0])
    checks = page.locator("[data-check]").evaluate_all(
        "els => els.map(e => ({kind: e.dataset.check, method: e.dataset.method, level: e.dataset.level || '',"
        " k: e.dataset.k || '', text: e.textContent.trim()}))")
    page.close()
    recall = pd.read_csv(open_run / "recall.csv")
    uap = pd.read_csv(open_run / "openset.csv").set_index("method")["uap"]
    methods = set(recall["method"])
    for check in checks:
        if check["kind"] == "uap":
            expected = uap[check["method"]]
        else:  # r1 (the headline's, instance level) or a cell of the Recall@K tables
            row = ((recall["method"] == check["method"]) & (recall["level"] == (check["level"] or "instance"))
                   & (recall["k"] == int(check["k"] or 1)))
            expected = recall.loc[row, "recall"].item()
        assert check["text"] == f"{expected:.4f}", check
    kinds = {kind: {c["method"] for c in checks if c["kind"] == kind} for kind in ("r1", "uap", "recall")}
    assert kinds["uap"] == methods and kinds["recall"] == methods and kinds["r1"] == methods
    assert sum(c["kind"] == "recall" for c in checks) == len(recall)  # every K, level and method


@needs_poppler
def test_the_pdf_has_every_section_in_order_and_pages(open_report):
    pdf = open_report[1]
    assert pdf.read_bytes().startswith(b"%PDF")
    lines = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    headings = [line.strip() for line in lines if line.strip() in SECTIONS]
    assert [h for i, h in enumerate(headings) if h not in headings[:i]] == SECTIONS
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    # Edits, Open set, Failures and Provenance each start a page; the first three sections share the first.
    assert 5 <= pages <= 30


def test_a_run_without_an_open_set_leaves_the_section_out_in_one_line(closed_run, demo_env):
    report = build(closed_run, *reopen(RunFolder.open(closed_run), demo_env))
    assert report.absent == ("openset",)
    assert "openset" not in report.sections and 'id="openset"' not in report.html
    assert report.html.count('id="openset-omitted"') == 1 and "<h2>Open set</h2>" not in report.html
    assert 'data-check="uap"' not in report.html
    assert 'id="failures"' in report.html and "data:image/jpeg" in report.html


def test_the_severity_sweep_joins_the_edits_when_the_folder_has_it(closed_run, demo_env, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(closed_run, out)
    before = build(out).html
    assert "No severity curves in this run" in before
    assert main(["severity", "--n", "12", "--methods", "phash", "--ops", "jpeg", "--out", str(out),
                 "--cache", str(demo_env)]) == 0
    after = build(out).html
    assert "No severity curves in this run" not in after
    assert "breaking point" in after and after.count("<svg") == before.count("<svg") + 1
    assert "severity.csv" in after and "breaking_points.csv" in after  # their checksums in the provenance


def test_without_the_runs_cache_the_copies_are_replayed_from_the_dataset_pixel_for_pixel(open_run, demo_env,
                                                                                         tmp_path, capsys):
    run = RunFolder.open(open_run)
    cached, _ = reopen(run, demo_env)
    replayed, why = reopen(run, tmp_path / "empty-cache")
    assert isinstance(cached, CachedImages) and isinstance(replayed, ReplayedImages)
    assert "does not hold this run" in why
    missed = run.per_query[run.per_query["rank"] != 1].drop_duplicates("query").head(8)
    assert len(missed) and all(replayed.query(q) == cached.query(q) for q in missed["query"])
    assert all(replayed.original(f) == cached.original(f) for f in missed["source"])
    html = tmp_path / "r.html"
    assert main(["report", str(open_run), "--html", str(html), "--cache", str(tmp_path / "empty-cache")]) == 0
    text = html.read_text()
    assert "Images from the dataset folder" in text and "data:image/jpeg" in text
    assert "gallery images from the dataset folder" in capsys.readouterr().err


def test_without_cache_or_dataset_the_gallery_says_why_and_lists_the_misses(open_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(open_run, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "data": str(tmp_path / "moved-away")}))
    html = tmp_path / "r.html"
    assert main(["report", str(out), "--html", str(html), "--cache", str(tmp_path / "empty-cache")]) == 0
    text = html.read_text()
    assert "Images left out:" in text and "is not here" in text and "data:image/jpeg" not in text
    assert text.count('class="card"') > 0
    assert "gallery without images" in capsys.readouterr().err


def test_the_reproducing_command_describes_the_same_experiment(open_run):
    config = RunFolder.open(open_run).config
    words = shlex.split(reproduce_command(config))
    assert words[:3] == ["python", "-m", "malle"] and words[3] == "demo"
    again = config_from_args(build_parser().parse_args(words[3:]))
    names = {f.name for f in fields(ExperimentConfig)}
    recorded = ExperimentConfig.from_dict({k: v for k, v in config.items() if k in names})
    # The demo's data is the built-in photos: None on the command line, their folder in config.json.
    assert replace(again, data=None) == replace(recorded, data=None)


def test_not_a_run_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("malle: error:") and "not a finished run's folder" in err and "\n" not in err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_pdf_without_chromium_is_a_one_line_error(open_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MALLE_CHROMIUM", str(tmp_path / "no-chromium"))
    assert main(["report", str(open_run), "--html", str(tmp_path / "r.html"), "--pdf", str(tmp_path / "r.pdf"),
                 "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("malle: error: the PDF needs headless Chromium")
    assert (tmp_path / "r.html").is_file() and not (tmp_path / "r.pdf").exists()


@needs_chromium
def test_the_overviews_button_returns_the_html_and_the_pdf(browser, demo_cache, tmp_path):
    with streamlit_server(ROOT / "streamlit_app.py", demo_cache, tmp_path / "streamlit.log",
                          drop_env=("MALLE_RESNET50_WEIGHTS",)) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1500}, accept_downloads=True)
        page = context.new_page()
        page.goto(url)
        settle(page)
        page.get_by_role("button", name="Download report").click()
        settle(page)
        page.get_by_text("Report ready").wait_for(timeout=240_000)
        files = {}
        for name, suffix in (("HTML report", "html"), ("PDF report", "pdf")):
            with page.expect_download(timeout=60_000) as download:
                page.get_by_role("button", name=name).click()
            files[suffix] = tmp_path / f"report.{suffix}"
            download.value.save_as(files[suffix])
        context.close()
    html = files["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and all(f'id="{key}"' in html for key in
                                                      ("headline", "methods", "recall", "edits", "openset",
                                                       "failures", "provenance"))
    assert "data:image/jpeg" in html
    assert files["pdf"].read_bytes().startswith(b"%PDF")


def test_the_dashboards_report_includes_the_sweeps_already_computed(demo_results, demo_env, tmp_path):
    """The Overview's report button writes the run's tables and the severity sweeps computed so far (never sweeps
    itself); the report draws them in each op's own unit, each method in its dashboard colour."""
    exp = demo_results.experiment
    exp.severity(["hflip"])  # what the Robustness page does when hflip is picked
    out = tmp_path / "run"
    demo_results.write(out)
    written = live.write_computed_sweeps(exp, out)
    assert [p.name for p in written] == ["severity.csv", "breaking_points.csv"]
    swept = pd.read_csv(out / "severity.csv")
    assert "hflip" in set(swept["op"]) and set(swept["op"]) <= set(live.computed_sweep_ops(exp))
    assert set(swept["method"]) == set(demo_results.methods)
    html = build(out, CachedImages.of(demo_results)).html
    assert "flipped (stronger →)" in html  # the axis is the op's own unit, not "level"
    assert palette.FIXED["phash"] in html and palette.FIXED["sscd_distilled"] in html

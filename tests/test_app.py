"""Every dashboard page through streamlit.testing.v1.AppTest, on the cached demo experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from malle.dashboard import frame
from malle.descriptors import create_descriptor
from malle.evaluation import recall as evaluate
from malle.lab import published as report
from malle.report.palette import short_names

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
CNN, PHASH = "efficientnet_lite2", "phash"
pytestmark = pytest.mark.usefixtures("demo_env")  # every app run reads the pre-built demo cache


def open_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def image_captions(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


def ranks(results, method: str, level: str = "instance") -> pd.Series:
    part = results.per_query[results.per_query["method"] == method].set_index("query")
    return part[evaluate.LEVELS[level]].astype("Float64").fillna(np.inf)


# -- frame and overview -------------------------------------------------------------------------
def test_overview_shows_the_engines_recall(demo_results, tmp_path):
    at = open_app()
    assert at.title[0].value == "Overview"
    demo_results.write(tmp_path)  # what the CLI writes
    recall = pd.read_csv(tmp_path / "recall.csv")
    names = short_names(demo_results.methods)
    for i, level in enumerate(("instance", "class")):
        # recall.csv holds 6 decimals (malle.lab.results.rounded); the page shows the engine's own values
        pd.testing.assert_frame_equal(at.dataframe[i].value, report.short_wide(recall, level).rename(columns=names),
                                      check_exact=False, rtol=0, atol=5e-7)
    published = report.reference_recall()
    for i, level in enumerate(("instance", "class"), start=2):
        pd.testing.assert_frame_equal(at.dataframe[i].value,
                                      report.short_wide(published, level).rename(columns=report.REFERENCE_LABELS))
    assert "published" in " ".join(c.value for c in at.caption).lower()
    assert any("K = 11" in c.value for c in at.caption)  # explained where it is shown
    (costs,) = [t.value for t in at.table if t.value.index.name == "measure"]
    expected = demo_results.costs()["ms_per_query"].map(lambda v: f"{v:.3f}").tolist()
    assert costs.loc["ms per query"].tolist() == expected


def test_overview_headline_tells_both_presets(demo_results):
    at = open_app()
    text = markdown_text(at)
    assert "**reference**, the published experiment" in text and "**hard**, the field's edits" in text
    assert at.button(key="overview_to_hard").label == "Switch to hard"


def test_frame_shows_one_resnet50_notice_and_the_experiment_in_use(demo_results):
    at = open_app()
    (line,) = [c.value for c in at.sidebar.caption if "ResNet-50 is not shown" in c.value]  # one line...
    assert "\n" not in line and len(line) < 160 and ":material/" in line
    (how,) = [e for e in at.sidebar.expander if e.label == "How to add ResNet-50 weights"]  # ...and how to fix it
    assert "EfficientNet-Lite2" in how.markdown[0].value and "--resnet50-weights" in how.markdown[0].value
    assert not [i.value for i in at.sidebar.info if "ResNet-50" in i.value]
    assert at.multiselect(key="methods").value == ["sscd_distilled", CNN, PHASH]
    assert at.number_input(key="n_demo").value == 60
    assert any("60 originals · 340 copies" in c.value for c in at.sidebar.caption)
    assert any(c.value.startswith("Cache: `") and " MB;" in c.value for c in at.sidebar.caption)
    assert any("Skipped files (0)" in e.label for e in at.expander)


def test_method_selection_reloads_from_the_cache(demo_results):
    at = open_app()
    at.multiselect(key="methods").set_value([PHASH])
    rerun(at)
    expected = report.short_wide(demo_results.recall(), "instance")[[PHASH]].rename(columns={PHASH: "pHash"})
    pd.testing.assert_frame_equal(at.dataframe[0].value, expected)
    assert not at.status, "a fully cached experiment shows no progress box"


def choose_folder_source() -> AppTest:
    at = open_app()
    at.radio(key="data_source").set_value(frame.FOLDER)
    rerun(at)
    assert "Enter a dataset folder" in at.info[0].value
    return at


def test_missing_folder_is_a_clear_error():
    at = choose_folder_source()
    at.text_input(key="data_folder").set_value("/nonexistent/images")
    rerun(at)
    assert len(at.error) == 1 and "not found" in at.error[0].value


def test_empty_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLE_ALLOWED_ROOTS", str(tmp_path))
    at = choose_folder_source()
    at.text_input(key="data_folder").set_value(str(tmp_path))
    rerun(at)
    assert len(at.error) == 1 and "no image files" in at.error[0].value


def test_uploads_without_any_image_are_reported():
    at = open_app()
    at.radio(key="data_source").set_value(frame.UPLOAD)
    rerun(at)
    at.file_uploader(key="data_uploads").set_value([("notes.jpg", b"not a picture", "image/jpeg")])
    rerun(at)
    assert "None of the uploaded files is a usable image" in at.error[0].value
    assert any("1 uploaded file(s) skipped" in e.label for e in at.expander)


def test_uploaded_images_run_once_with_progress_per_stage(demo_photos):
    at = open_app()
    at.radio(key="data_source").set_value(frame.UPLOAD)
    rerun(at)
    photos = [(f"up_{i}.jpg", photo.read_bytes(), "image/jpeg") for i, photo in enumerate(demo_photos[20:24])]
    at.file_uploader(key="data_uploads").set_value([*photos, ("broken.png", b"\x89PNG broken", "image/png")])
    rerun(at)
    (status,) = at.status
    assert status.label == "Experiment ready" and status.state == "complete"
    done = [m.value for m in status.markdown]
    assert done[0].startswith("✓ sample originals: 4/4 in ") and done[1].startswith("✓ copies: 4/4 in ")
    cnn = [line.split(" in ")[0] for line in done if line.startswith("✓ EfficientNet-Lite2")]
    label = create_descriptor("efficientnet_lite2").label  # ends with the precision this CPU gets by default
    assert cnn[0] == f"✓ {label}: originals: 4/4" and label.endswith(("fp32)", "bf16)", "int8)"))
    assert cnn[1].startswith(f"✓ {label}: copies: ")
    assert "only 4 usable images" in at.sidebar.warning[0].value
    assert any("1 uploaded file(s) skipped" in e.label for e in at.expander)
    (summary,) = [d.value["value"].to_dict() for d in at.table if d.value.index.name == "item"]
    assert summary["Originals"] == "4" and summary["Skipped files"] == "1"
    rerun(at)
    assert not at.status, "the second run comes from the cache"


# -- augmentation lab ---------------------------------------------------------------------------
def modified_image_url(at: AppTest) -> str:
    (image,) = [i for i in at.image if i.captions == ["Modified"]]
    return image.value[0]


LAB_FIRST_CHAIN = "watermark(font_size=80, opacity=120, x=0.5, y=0.5) → rotate(angle=0) → jpeg(quality=55)"


def test_lab_ops_change_the_chain_and_the_modified_image():
    at = open_app("augmentation_lab")
    assert at.code[0].value == LAB_FIRST_CHAIN
    before = modified_image_url(at)
    at.multiselect(key="lab_ops").set_value(["jpeg", "rotate", "occlude"])
    rerun(at)
    assert at.code[0].value.startswith("jpeg(quality=55) → rotate(angle=0) → occlude(")  # order of selection
    assert modified_image_url(at) != before
    at.slider(key="lab_param_rotate_angle").set_value(9.5)
    rerun(at)
    assert "rotate(angle=9.5)" in at.code[0].value
    assert len(at.get("download_button")) == 1


def test_lab_roll_and_pick_original():
    at = open_app("augmentation_lab")
    at.button(key="lab_roll").click()
    rerun(at)
    assert at.code[0].value != LAB_FIRST_CHAIN
    assert -15 <= at.slider(key="lab_param_rotate_angle").value <= 15
    assert 30 <= at.slider(key="lab_param_jpeg_quality").value <= 80
    at.button(key="lab_pick_15_15.JPEG").click()
    rerun(at)
    assert at.selectbox(key="lab_original").value == "15_15.JPEG"
    assert any(c.startswith("Original: 15_15.JPEG") for c in image_captions(at))


def test_lab_ranks_the_true_original_for_each_method(demo_results):
    at = open_app("augmentation_lab")
    text = markdown_text(at)
    for name in short_names(demo_results.methods).values():
        assert f"**{name}**: true original ranks **#1** of 60" in text
    captions = image_captions(at)
    first = demo_results.experiment.originals["file"].iloc[0]  # the lab opens on the first original
    assert sum(c.startswith(f"true original · #1 {first}") for c in captions) == len(demo_results.methods)


# -- per-transformation breakdown ---------------------------------------------------------------
def test_breakdown_k_slider_and_level(demo_results):
    at = open_app("per_transformation")
    for k in (1, 7):
        at.slider(key="pt_k").set_value(k)
        rerun(at)
        shown = at.dataframe[0].value
        expected = evaluate.recall_at_k(demo_results.per_query, [k])
        for method, name in short_names(demo_results.methods).items():
            for level in ("instance", "class"):
                value = expected.query("method == @method and level == @level")["recall"].item()
                assert shown.loc[name, f"{level} Recall@{k}"] == value
    at.radio(key="pt_level").set_value("class")
    rerun(at)
    assert at.dataframe[1].value.index.name == "class Recall@7 by op"


def test_breakdown_names_the_hardest_op_for_phash(demo_results):
    at = open_app("per_transformation")
    per_op = demo_results.per_op([1]).query("method == 'phash' and level == 'instance'")
    worst = per_op.loc[per_op["recall"].idxmin(), "op"]
    assert f"Hardest op for **pHash**: **{worst} (" in markdown_text(at)


def test_breakdown_op_filter(demo_results):
    at = open_app("per_transformation")
    at.multiselect(key="pt_include").set_value(["blur"])
    at.multiselect(key="pt_exclude").set_value(["jpeg"])
    rerun(at)
    kept = evaluate.filter_by_ops(demo_results.per_query, ["blur"], ["jpeg"])
    assert f"**{len(kept) // len(demo_results.methods)}** queries per method match the filter." in markdown_text(at)
    at.multiselect(key="pt_exclude").set_value(["blur"])
    rerun(at)
    assert "No query matches this op filter." in at.warning[0].value


# -- method comparison --------------------------------------------------------------------------
def test_comparison_matrix_matches_the_ranks(demo_results):
    at = open_app("method_comparison")
    assert at.selectbox(key="cmp_a").value == CNN and at.selectbox(key="cmp_b").value == PHASH
    for k in (1, 10):
        at.slider(key="cmp_k").set_value(k)
        rerun(at)
        a, b = ranks(demo_results, CNN) <= k, ranks(demo_results, PHASH) <= k
        matrix = at.dataframe[0].value.to_numpy()
        expected = [[(a & b).sum(), (a & ~b).sum()], [(~a & b).sum(), (~a & ~b).sum()]]
        assert matrix.tolist() == np.array(expected).tolist()


def test_comparison_cell_opens_examples(demo_results):
    at = open_app("method_comparison")
    a, b = ranks(demo_results, CNN) <= 1, ranks(demo_results, PHASH) <= 1
    at.segmented_control(key="cmp_cell").set_value("neither")
    rerun(at)
    neither = list(a[~a & ~b].index)
    queries = [c.removeprefix("query ") for c in image_captions(at) if c.startswith("query ")]
    assert queries == neither[:8]
    at.segmented_control(key="cmp_cell").set_value("both")
    rerun(at)
    assert len([c for c in image_captions(at) if c.startswith("query ")]) == 8
    assert len(at.get("vega_lite_chart")) == 3  # two score histograms and the recall curves


# -- failure gallery ----------------------------------------------------------------------------
def test_failure_gallery_counts_pages_and_filters(demo_results):
    at = open_app("failure_gallery")
    at.selectbox(key="fail_method").set_value(PHASH)
    rerun(at)
    failed = ranks(demo_results, PHASH) > 1
    assert f"**{int(failed.sum())}** failures among 340 queries" in markdown_text(at)
    assert len(image_captions(at)) == 10 * 5  # query, true original, top-3 per card
    first_page = at.markdown[1].value
    at.pagination(key="fail_page").set_value(2)
    rerun(at)
    assert at.markdown[1].value != first_page
    at.multiselect(key="fail_ops").set_value(["rotate"])
    rerun(at)
    with_rotate = evaluate.filter_by_ops(demo_results.per_query.query("method == 'phash'"), ["rotate"])
    n = int((with_rotate["rank"].astype("Float64").fillna(np.inf) > 1).sum())
    assert f"**{n}** failures among 340 queries" in markdown_text(at)
    assert all("rotate(" in c.value for c in at.caption if c.value.startswith("Chain: "))


def test_failure_gallery_opens_on_failures_and_zero_is_no_dead_end(demo_results):
    at = open_app("failure_gallery")
    first_failing = next(m for m in demo_results.methods if (ranks(demo_results, m) > 1).any())
    assert at.selectbox(key="fail_method").value == first_failing  # opens where there is something to see
    at.selectbox(key="fail_method").set_value("sscd_distilled")  # misses nothing on the reference preset
    rerun(at)
    assert "ranks every true original first" in at.success[0].value
    offered = [b for b in at.button if b.key and b.key.startswith("fail_alt_")]
    assert offered and all("failures among 340" in b.label for b in offered)
    offered[0].click()
    rerun(at)
    assert at.selectbox(key="fail_method").value != "sscd_distilled"  # one click shows a method that fails
    assert not at.success and "**0** failures" not in markdown_text(at)


# -- search -------------------------------------------------------------------------------------
def test_search_an_uploaded_photo_finds_itself(demo_results):
    original = demo_results.experiment.originals.iloc[3]  # a demo photo that is one of the originals
    photo = demo_results.experiment.data_root / original["source_path"]
    at = open_app("image_search")
    at.file_uploader(key="search_upload").set_value((photo.name, photo.read_bytes(), "image/jpeg"))
    rerun(at)
    tops = [c for c in image_captions(at) if "#1 " in c]
    assert len(tops) == len(demo_results.methods) and all(original["file"] in c for c in tops)
    assert any(c.endswith("/64 bits") for c in tops)  # hashes show their distance out of the code's bits
    # an original itself: every method says "copy" at its calibrated threshold, shown in its own unit
    text = markdown_text(at)
    assert text.count("**copy** (#1: ") == len(demo_results.methods) and "**no copy**" not in text
    assert "Hamming distance 0/64 bits ≤ 14" in text and "≥ 0.2900" in text
    at.slider(key="search_k").set_value(3)
    rerun(at)
    assert sum(c.split(" · ")[0].endswith((".JPEG",)) for c in image_captions(at) if "#" in c) == \
        len(demo_results.methods) * 3


def test_search_says_no_copy_for_a_photo_that_copies_nothing(demo_results, demo_photos):
    used = {Path(p).name for p in demo_results.experiment.originals["source_path"]}
    unrelated = next(p for p in demo_photos if p.name not in used)
    at = open_app("image_search")
    at.file_uploader(key="search_upload").set_value((unrelated.name, unrelated.read_bytes(), "image/jpeg"))
    rerun(at)
    (sscd,) = [m.value for m in at.markdown if m.value.startswith("**SSCD distilled**: ")]
    assert "**no copy** (#1: cosine similarity" in sscd and "< 0.2900" in sscd


def test_search_rejects_a_non_image():
    at = open_app("image_search")
    at.file_uploader(key="search_upload").set_value(("notes.jpg", b"not a picture", "image/jpeg"))
    rerun(at)
    assert at.error[0].value.startswith("Cannot use notes.jpg: not an image")


def test_search_a_copy_reports_the_engines_rank(demo_results):
    at = open_app("image_search")
    at.radio(key="search_origin").set_value("A copy from the experiment")
    rerun(at)
    query = demo_results.experiment.manifest["file"].iloc[40]
    at.selectbox(key="search_copy").set_value(query)
    rerun(at)
    text = markdown_text(at)
    captions = " ".join(c.value for c in at.caption)
    for method, name in short_names(demo_results.methods).items():
        rank = ranks(demo_results, method)[query]
        assert f"**{name}**: " in text and f"true original ranks #{int(rank)}" in captions



# -- the copy-detection methods on every page ------------------------------------------------------
@pytest.mark.parametrize("page", ["overview", "method_comparison", "failure_gallery", "image_search",
                                  "augmentation_lab"])
def test_every_page_works_for_the_copy_detection_methods(page):
    at = open_app()
    at.multiselect(key="methods").set_value(["sscd_distilled", "pdq_dihedral"])
    rerun(at)
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py")
        rerun(at)
    if page == "image_search":
        at.radio(key="search_origin").set_value("A copy from the experiment")
        rerun(at)
        captions = [c for c in image_captions(at) if "#1 " in c]
        assert any("/256 bits" in c for c in captions), captions  # PDQ distances out of 256 bits
    if page == "overview":
        metrics = [m.label for m in at.metric]
        assert metrics == ["SSCD distilled", "PDQ dihedral"]  # one row, copy-detection first
        families = [m.value for m in at.markdown if m.value in ("**Copy-detection descriptors**",
                                                                  "**ImageNet CNNs**", "**Perceptual hashes**")]
        assert families == ["**Copy-detection descriptors**", "**Perceptual hashes**"]


# -- robustness and detection ------------------------------------------------------------------------
def test_robustness_sweeps_with_progress_then_from_the_cache(demo_results):
    at = open_app("robustness")
    assert at.title[0].value == "Robustness"
    at.multiselect(key="rob_ops").set_value(["hflip"])
    rerun(at)
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    x_axes = [panel["layer"][0]["encoding"]["x"] for panel in spec["concat"]]  # a panel per op swept, no empty one
    assert [(x["field"], x["title"], x["sort"]) for x in x_axes] == [("strength", "flipped (stronger →)", ["0", "1"])]
    (breaking,) = [d.value for d in at.dataframe if d.value.index.name == "op"]
    assert list(breaking.index) == ["hflip"] and breaking.loc["hflip", "pHash"] == "flipped=1"
    assert image_captions(at)[:2] == ["flipped=0", "flipped=1"]  # the strip: one original at every level
    rerun(at)
    assert not at.status, "a cached sweep shows no progress box"


def test_detection_scores_and_threshold_picker(demo_results):
    at = open_app("detection")
    assert at.title[0].value == "Detection"
    (scores,) = [d.value for d in at.dataframe if "µAP" in d.value.columns]
    expected = demo_results.openset()
    assert scores["µAP"].max() == pytest.approx(expected["uap"].max())
    first = {m.label: m.value for m in at.metric}
    assert float(first["precision"]) >= 0.9  # the default: target precision 0.9
    at.selectbox(key="det_method").set_value(PHASH)
    at.radio(key="det_mode").set_value("threshold")
    rerun(at)
    slider = at.slider(key="det_value")
    loosest = int(slider.max)  # the largest distance among pHash's predictions: accept them all
    slider.set_value(loosest)
    rerun(at)
    text = markdown_text(at)
    assert f"At **Hamming distance ≤ {loosest}/64 bits**:" in text
    phash = {m.label: m.value for m in at.metric}
    assert int(phash["false positives"]) > 0  # distance 30 lets distractors through
    assert any("distractor" in c for c in image_captions(at))


def test_failure_gallery_names_the_op_charged_with_each_miss(demo_results):
    at = open_app("failure_gallery")
    at.selectbox(key="fail_method").set_value(PHASH)
    rerun(at)
    charged = [c.value for c in at.caption if c.value.startswith("Charged with the miss")]
    assert charged and all("**" in c for c in charged)


def test_per_transformation_shows_which_op_caused_the_misses(demo_results):
    at = open_app("per_transformation")
    (table,) = [d.value for d in at.dataframe if d.value.index.name == "charged with the miss"]
    assert "pHash" in table.columns
    assert table["pHash"].sum() == pytest.approx(1.0)

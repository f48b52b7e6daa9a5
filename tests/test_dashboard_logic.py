"""malle.dashboard's logic on the real demo experiment, without Streamlit."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from malle.cli.options import weights_from_args
from malle.dashboard import augmentation_lab as lab
from malle.dashboard import detection, frame, legend, overview, per_transformation, prefetch, shared
from malle.dashboard import failure_gallery as failures
from malle.dashboard import image_search as search
from malle.dashboard import method_comparison as comparison
from malle.errors import BadImage
from malle.evaluation import recall as evaluate
from malle.inference.cpu import cpu_features
from malle.lab import published as report
from malle.lab.experiment import ExperimentConfig
from malle.ops import OPS, REFERENCE_OPS, Choices, SelectBox, Slider, chain_from_json
from malle.report import palette, summary
from malle.report.details import threshold_text
from malle.retrieval.metrics import HAMMING


def ranks(results, method: str, level: str = "instance") -> pd.Series:
    part = results.per_query[results.per_query["method"] == method].set_index("query")
    return part[evaluate.LEVELS[level]].astype("Float64").fillna(np.inf)


def chart_fields(chart) -> dict[str, str]:
    """Channel -> field of a single-view chart's Vega-Lite spec (tooltips left out)."""
    return {channel: spec.get("field") for channel, spec in chart.to_dict()["encoding"].items()
            if channel != "tooltip"}


# -- agreement ----------------------------------------------------------------------------------
@pytest.mark.parametrize("k,level", [(1, "instance"), (5, "instance"), (3, "class")])
def test_agreement_counts_add_up_and_match_the_ranks(demo_results, k, level):
    table = comparison.agreement_table(demo_results, "efficientnet_lite2", "phash", k, level)
    counts = comparison.agreement_counts(table)
    a, b = ranks(demo_results, "efficientnet_lite2", level) <= k, ranks(demo_results, "phash", level) <= k
    assert sum(counts.values()) == len(a) == 340
    assert counts == {"both": int((a & b).sum()), "only_a": int((a & ~b).sum()),
                      "only_b": int((~a & b).sum()), "neither": int((~a & ~b).sum())}
    matrix = comparison.agreement_matrix(table, "A", "B")
    assert matrix.to_numpy().tolist() == [[counts["both"], counts["only_a"]], [counts["only_b"], counts["neither"]]]
    only_a = table[table["cell"] == "only_a"]["query"]
    assert a[only_a].all() and not b[only_a].any()


def test_default_pair_is_the_cnn_against_phash():
    assert comparison.default_pair(["phash", "efficientnet_lite2"]) == ("efficientnet_lite2", "phash")
    assert comparison.default_pair(["efficientnet_lite2", "phash", "resnet50"]) == ("resnet50", "phash")
    assert comparison.default_pair(["dhash", "ahash"]) == ("dhash", "ahash")


# -- failures -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["efficientnet_lite2", "phash"])
def test_failures_are_exactly_the_queries_not_ranked_first(demo_results, method):
    failed = failures.failures(demo_results, method, ())
    rank = ranks(demo_results, method)
    assert set(failed["query"]) == set(rank[rank > 1].index)
    order = failed["rank"].astype("Float64").fillna(np.inf).to_numpy()
    assert (np.diff(order) <= 0).all(), "worst rank first"


def test_failure_op_filter_and_cards(demo_results):
    exp = demo_results.experiment
    failed = failures.failures(demo_results, "phash", ("rotate",))
    assert len(failed) and failed["ops"].str.split("|").map(lambda ops: "rotate" in ops).all()
    assert len(failed) < len(failures.failures(demo_results, "phash", ()))
    ids, scores = exp.neighbours("phash")
    cards = failures.failure_cards(exp, "phash", shared.page_rows(failed, 1, 10), ids, scores)
    assert len(cards) == min(10, len(failed))
    for card, row in zip(cards, failed.itertuples()):
        assert card.query_path.is_file() and card.source_path.name == row.source
        assert "rotate(" in card.chain and card.rank == row.rank
        assert len(card.neighbours) == 3
        assert card.neighbours[0].path.name == row.top1  # the stored top-1 is the gallery's first hit
        assert all(t.is_true == (t.path.name == row.source) for t in card.neighbours)


def test_pagination_helpers():
    table = pd.DataFrame({"x": range(23)})
    assert shared.n_pages(23, 10) == 3 and shared.n_pages(0, 10) == 1
    assert shared.page_rows(table, 3, 10)["x"].tolist() == [20, 21, 22]


# -- charts and tables --------------------------------------------------------------------------
def test_recall_curve_chart_spec(demo_results):
    recall = shared.recall_table(demo_results, range(1, 21))
    chart = overview.recall_curve_chart(recall)
    assert chart_fields(chart) == {"x": "k", "y": "recall", "color": "name", "strokeDash": "level"}
    spec = chart.to_dict()
    values = spec["datasets"][spec["data"]["name"]]
    names = palette.short_names(demo_results.methods)
    assert {v["name"] for v in values} == set(names.values())
    assert len(values) == len(demo_results.methods) * 2 * 20  # methods x levels x K
    scale = spec["encoding"]["color"]["scale"]
    assert scale["domain"] == list(names.values()) and scale["range"] == [palette.colour(m) for m in names]


def test_one_colour_per_method_wherever_it_is_drawn(demo_results):
    """The same method has the same colour whatever else is selected, in the dashboard and in the report."""
    alone = palette.colour_encoding(palette.short_names(["phash"])).to_dict()["scale"]
    together = palette.colour_encoding(palette.short_names(demo_results.methods)).to_dict()["scale"]
    assert alone["range"] == [together["range"][together["domain"].index("pHash")]] == [palette.FIXED["phash"]]
    assert len(set(palette.colour(m) for m in palette.FIXED)) == len(palette.FIXED)
    assert palette.colour("sscd_distilled+verify") == palette.colour("sscd_distilled+verify") != palette.colour(
        "sscd_distilled")
    report_names = {m: summary.short(label) for m, label in demo_results.labels.items()}
    assert report_names == palette.short_names(demo_results.methods)  # the report's names are the dashboard's


def test_op_heatmap_spec_and_hardest_op(demo_results):
    per_op = demo_results.per_op((1,))
    names = palette.short_names(demo_results.methods)
    spec = per_transformation.op_heatmap(per_op, 1, "instance", names).to_dict()
    rect, text = spec["layer"]
    assert rect["mark"]["type"] == "rect" and text["mark"]["type"] == "text"
    wide = per_transformation.per_op_wide(per_op, 1, "instance", names)
    for layer in (rect, text):
        assert layer["encoding"]["x"]["field"] == "name" and layer["encoding"]["y"]["field"] == "op_title"
        # every column labelled, in the table's order
        assert layer["encoding"]["x"]["sort"] == [c for c in wide.columns if c != "queries"]
        assert layer["encoding"]["x"]["axis"]["labelOverlap"] is False
    assert rect["encoding"]["color"]["field"] == "recall" and text["encoding"]["text"]["field"] == "recall"
    phash = per_op[(per_op["method"] == "phash") & (per_op["level"] == "instance")]
    worst = phash.loc[phash["recall"].idxmin()]
    sentences = per_transformation.hardest_op_sentences(per_op, 1, "instance", names)
    assert f"Hardest op for **pHash**: **{shared.op_title(worst['op'])}**" in " ".join(sentences)
    # a method that misses nothing is not given a "hardest op" with Recall@1 = 1
    assert "**SSCD distilled** misses no query at instance Recall@1" in " ".join(sentences)
    assert per_transformation.perfect_methods(per_op, 1, "instance") == ["sscd_distilled"]
    assert len(wide) == len(REFERENCE_OPS) and wide.index[0] == shared.op_title(
        per_op[per_op["level"] == "instance"].groupby("op")["recall"].mean().idxmin())
    assert wide.loc[shared.op_title(worst["op"]), "pHash"] == worst["recall"]


def test_chain_length_and_score_charts(demo_results):
    by_length = demo_results.by_chain_length((5,))
    names = palette.short_names(demo_results.methods)
    chart = per_transformation.chain_length_chart(by_length, 5, "class", names)
    assert chart_fields(chart)["x"] == "chain_length"
    table = per_transformation.chain_length_wide(by_length, 5, "class", names)
    assert table["queries"].sum() == 340 and list(table.index) == [1, 2, 3, 4, 5]
    chart = comparison.score_chart(demo_results.per_query, "phash", "pHash", HAMMING)
    fields = chart_fields(chart)
    assert fields["x"] == "score" and fields["color"] == "kind"
    assert "lower = more similar" in chart.to_dict()["title"]


def test_filtered_breakdown_recomputes_on_the_kept_queries(demo_results):
    found = per_transformation.breakdown(demo_results, ("blur",), ("jpeg",), 3)
    kept = evaluate.filter_by_ops(demo_results.per_query, ["blur"], ["jpeg"])
    assert found.n_queries == len(kept) // len(demo_results.methods)
    expected = evaluate.recall_at_k(kept, [3])
    pd.testing.assert_frame_equal(found.recall.reset_index(drop=True), expected)
    assert set(found.per_op["op"]) == set(REFERENCE_OPS) - {"jpeg"}
    assert per_transformation.breakdown(demo_results, ("blur",), ("blur",), 1) is None


def test_headline_tables_are_the_cli_tables(demo_results):
    recall = demo_results.recall()
    tables = overview.headline_tables(recall)
    names = palette.short_names(demo_results.methods)
    for level in shared.LEVELS:
        pd.testing.assert_frame_equal(tables[level], report.short_wide(recall, level).rename(columns=names))
        assert list(tables[level].columns) == list(names.values())  # short names; the legend has the labels
    assert overview.published_tables()["instance"].loc[1].tolist() == [0.9425, 0.5486]


def test_costs_and_dataset_summary(demo_results):
    exp = demo_results.experiment
    costs = overview.costs_table(demo_results)
    names = palette.short_names(demo_results.methods)
    assert list(costs.columns) == list(names.values())  # a column per method: fits any screen
    assert all(float(v.replace(",", "")) > 0 for v in costs.loc["images/s to encode"])
    cnn = exp.descriptor("efficientnet_lite2")
    assert costs.loc["runs on", "EfficientNet-Lite2"].startswith(cnn.engine.path())
    assert set(costs.loc["CPU"]) == {cpu_features().describe()}
    assert costs.loc["metric", "pHash"] == "Hamming distance"
    summary = dict(overview.dataset_summary(exp, frame.DEMO.label, 2).itertuples(index=False))
    assert summary["Originals"] == "60" and summary["Modified copies (queries)"] == "340"
    assert summary["Skipped files"] == str(len(exp.skipped) + 2) and summary["Seed"] == "0"


def test_overview_headline_says_what_each_preset_shows(demo_results):
    sentence = overview.preset_sentence("reference", demo_results)
    assert sentence.startswith("**reference**, the published experiment (")
    assert "SSCD distilled ranks the true original first for 100.0% of 340 copies" in sentence
    assert "pHash for" in sentence and "misses none" in sentence
    waiting = overview.preset_sentence("hard", None, "being computed in the background (stage 2 of 9)")
    assert waiting.startswith("**hard**, the field's edits (") and waiting.endswith("(stage 2 of 9).")


def test_the_other_presets_progress_in_the_headline_names_the_preset_once():
    running = prefetch.JobProgress("The hard preset", prefetch.RUNNING, 3, 7, "copies 296/340")
    assert overview.readiness_words(running) == "being computed in the background (stage 4 of 7, now copies 296/340)"
    assert overview.readiness_words(prefetch.JobProgress("", prefetch.READY)) == "ready"
    sentence = overview.preset_sentence("hard", None, overview.readiness_words(running))
    assert "hard preset" not in sentence
    assert sentence.endswith("): being computed in the background (stage 4 of 7, now copies 296/340).")


def test_k11_is_explained_where_the_tables_show_it(demo_results):
    assert 11 in demo_results.config.ks and 11 in overview.published_tables()["instance"].index
    assert "K = 11" in summary.K11_NOTE and "published" in summary.K11_NOTE


def test_legend_gives_every_method_its_full_label(demo_results):
    text = legend.markdown(demo_results, licence=True)
    for method, label in demo_results.labels.items():
        assert f"**{palette.short_name(method)}**: {label};" in text
    assert text.count("engine: ") == text.count("precision: ") == text.count("licence: ") == 3


# -- thresholds: one definition, in the method's own unit -----------------------------------------
@pytest.mark.parametrize("target", [0.9, 0.8, 0.95])
def test_table_threshold_is_the_pickers_at_the_same_precision(demo_results, target):
    """The scores table's threshold@P90 is the picker's at 0.90, both shown in the method's unit (never negated)."""
    table = demo_results.openset().set_index("method")
    scores, _ = detection.scores_table(demo_results)
    shown = dict(zip(scores["method"], scores["threshold@P90"]))
    for method in demo_results.methods:
        desc = demo_results.experiment.descriptor(method)
        picked = detection.similarity_for_precision(demo_results, method, target)
        point = detection.operating_point(demo_results, method, picked)
        assert point.precision >= target
        if target == 0.9:
            assert picked == table.loc[method, "threshold_at_p90"]
            words = threshold_text(desc.metric, picked, desc.dim)
            assert shown[palette.short_name(method)] == words
            native = detection.native(desc.metric, picked)
            assert native >= 0 and "-" not in words
            if desc.metric.binary:
                assert words == f"Hamming distance ≤ {int(native)}/{desc.dim} bits"
            else:
                assert words == f"cosine similarity ≥ {native:.4f}"
        # the highest recall at that precision: a looser threshold gains no copy
        looser = detection.operating_point(demo_results, method, np.nextafter(picked, -np.inf))
        assert looser.recall == point.recall or looser.precision < target


def test_detection_opens_on_a_method_with_something_to_show(demo_results):
    table = demo_results.openset().set_index("method")
    method = detection.default_method(demo_results)
    assert table.loc[method, "recall_at_p90"] < 1
    assert method == next(m for m in demo_results.methods if table.loc[m, "recall_at_p90"] < 1)



def test_reliability_curve_and_ece_are_the_runs_calibration(demo_results):
    fitted = demo_results.calibration()
    assert set(fitted) == set(demo_results.methods)
    table, meanings = detection.calibration_table(demo_results)
    names = palette.short_names(demo_results.methods)
    shown = dict(zip(table["method"], table["ece"]))
    assert shown == {names[m]: f["ece"] for m, f in fitted.items()} and table["ece"].is_monotonic_increasing
    assert dict(zip(table["method"], table["ece top-1"])) == {names[m]: f["ece_top1"] for m, f in fitted.items()}
    assert "held-back" in meanings["ece"]
    spec = detection.reliability_chart(demo_results).to_dict()
    lines = spec["layer"][1]
    assert lines["encoding"]["x"]["field"] == "confidence" and lines["encoding"]["y"]["field"] == "observed"
    colours = lines["encoding"]["color"]["scale"]
    assert colours["range"] == [palette.colour(m) for m in demo_results.methods]  # the PR curve's colours
    drawn = pd.DataFrame(spec["datasets"][lines["data"]["name"]])
    assert len(drawn) == sum(len(f["reliability_top1"]) for f in fitted.values())


def test_false_matches_per_kind_are_distractor_queries_over_the_threshold(demo_results):
    exp = demo_results.experiment
    table = detection.false_matches_by_kind(demo_results).set_index("kind")
    kinds = exp.distractor_manifest.set_index("file")["kind"]
    assert table["queries"].to_dict() == kinds.value_counts().to_dict()
    thresholds = demo_results.openset().set_index("method")["threshold_at_p90"]
    names = palette.short_names(demo_results.methods)
    for method in demo_results.methods:
        if np.isnan(thresholds[method]):  # no threshold at precision 0.9: nothing counted
            assert table[names[method]].isna().all()
            continue
        rows = demo_results.predictions([method])
        over = rows[rows["query"].isin(kinds.index) & (rows["score"] >= thresholds[method])]
        assert not over["is_match"].any()  # no distractor query's original is in the database
        expected = kinds[over["query"].unique()].value_counts()
        assert table[names[method]].to_dict() == expected.reindex(table.index, fill_value=0).to_dict()
        assert (table[names[method]] <= table["queries"]).all()

# -- augmentation lab and search ----------------------------------------------------------------
def test_controls_follow_the_param_specs():
    for op in OPS.values():
        for spec in op.params:
            control = lab.control_for(spec)
            assert control.default == spec.default and control.fit(spec.default) == spec.default
            if isinstance(spec.kind, Choices):
                assert isinstance(control, SelectBox) and control.options == spec.kind.options
            else:
                assert isinstance(control, Slider) and (control.low, control.high) == spec.kind.span


def test_rolled_params_fit_their_controls():
    rolled = lab.roll_params(list(OPS), (512, 384), np.random.default_rng(1))
    assert list(rolled) == list(OPS)
    for name, params in rolled.items():
        for spec in OPS[name].params:
            assert lab.control_for(spec).fit(params[spec.name]) in spec.kind


def test_lab_ranks_a_lightly_modified_original_first(demo_results):
    original = demo_results.experiment.originals["file"].iloc[7]
    chain = lab.chain_json(["rotate", "jpeg"], {"rotate": {"angle": 4.0}, "jpeg": {"quality": 70}})
    modified, rankings = lab.lab_rankings(demo_results, original, chain)
    assert [s.op for s in chain_from_json(chain)] == ["rotate", "jpeg"]
    assert Image.open(io.BytesIO(modified)).format == "JPEG"
    assert modified == lab.lab_modify(demo_results.experiment.originals_dir / original, chain)  # deterministic
    for ranking in rankings:
        assert ranking.rank == 1 and ranking.table["is_true"].iloc[0] and len(ranking.table) == 5


def test_search_rankings_for_a_stored_copy_match_the_engine(demo_results):
    exp = demo_results.experiment
    row = exp.manifest.iloc[11]
    data = (exp.copies_dir / row["file"]).read_bytes()
    for ranking in search.search_rankings(demo_results, data, row["source"], 3):
        stored = ranks(demo_results, ranking.method)[row["file"]]
        assert ranking.rank == stored
        assert len(ranking.table) == 3


def test_thumbnail_is_a_small_jpeg(demo_results):
    exp = demo_results.experiment
    data = shared.thumbnail_jpeg(exp.originals_dir / exp.originals["file"].iloc[0])
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG" and max(img.size) == shared.THUMB_PX


# -- uploads ------------------------------------------------------------------------------------
def jpeg_bytes(path) -> bytes:
    return path.read_bytes()


def test_save_uploads_keeps_images_and_rejects_the_rest_with_reasons(tmp_path, demo_photos):
    files = [("a_1.jpg", jpeg_bytes(demo_photos[0])), ("notes.txt", b"hello"),
             ("fake.jpg", b"not a picture"), ("a_1.jpg", jpeg_bytes(demo_photos[1])),
             ("../../evil name.PNG", _png())]
    saved = frame.save_uploads(files, tmp_path)
    assert saved.saved == ["a_1.jpg", "a_1-2.jpg", "evil-name.png"]
    assert sorted(p.name for p in saved.folder.iterdir()) == sorted(saved.saved)
    assert saved.folder.parent.parent == tmp_path / "uploads"
    reasons = dict(saved.skipped.itertuples(index=False))
    assert "not an image file type" in reasons["notes.txt"]
    assert "not an image" in reasons["fake.jpg"]
    again = frame.save_uploads(list(reversed(files)), tmp_path)  # same bytes, any order: same folder
    assert again.folder == saved.folder and again.saved == saved.saved


def test_save_uploads_with_nothing_usable(tmp_path):
    saved = frame.save_uploads([("fake.jpg", b"not a picture")], tmp_path)
    assert saved.folder is None and len(saved.skipped) == 1


def test_check_upload_refuses_oversized_files():
    with pytest.raises(BadImage, match="larger than 1 MB"):
        frame.check_upload("big.png", b"0" * (2**20 + 1), max_mb=1)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "teal").save(buf, format="PNG")
    return buf.getvalue()


# -- configuration and notices ------------------------------------------------------------------
def test_config_key_round_trips():
    config = ExperimentConfig(data="/data", n=50, seed=3, methods=("phash",), weights={"resnet50": "w.pth"})
    assert frame.config_from_key(frame.config_key(config)) == config
    assert frame.config_from_key(frame.config_key(ExperimentConfig())) == ExperimentConfig()


def test_missing_resnet50_is_one_structured_notice_that_says_how_to_get_weights(demo_env):
    [skipped] = frame.unavailable_notices()
    assert skipped.method == "resnet50" and "/nonexistent/resnet50.pth" in skipped.reason
    notice = frame.notice_text(skipped, ["efficientnet_lite2", "phash"])
    for needed in ("--resnet50-weights PATH", "MALLE_RESNET50_WEIGHTS", "EfficientNet-Lite2"):
        assert needed in notice
    options, defaults = frame.method_options()
    assert "resnet50" not in options and defaults == ["sscd_distilled", "efficientnet_lite2", "phash"]
    assert frame.engine_notices([skipped.notice(), "only 5 images", "only 5 images"], [skipped]) == ["only 5 images"]


def test_app_args_ignore_foreign_options():
    args = frame.parse_app_args(["-x", "tests", "--resnet50-weights", "w.pth", "--allowed-root", "/data"])
    assert weights_from_args(args) == {"resnet50": "w.pth"}  # the CLI's reading of its options
    assert frame.allowed_roots(args) == [Path("/data").resolve()]
    assert weights_from_args(frame.parse_app_args([])) == {}


# -- progress -----------------------------------------------------------------------------------
def test_progress_draws_only_from_the_creating_thread():
    shown, finished = [], []
    reporter = frame.ProgressReporter(lambda *a: shown.append(a), lambda *a: finished.append(a[:3]), min_step=0.1)
    bar = reporter(total=100, desc="copies")

    def work():
        for _ in range(50):
            bar.update(1)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert shown == [("copies", 0, 100)] and bar.done == 50  # counted, not drawn, off-thread
    for _ in range(50):
        bar.update(1)
    bar.close()
    assert shown[1] == ("copies", 51, 100) and shown[-1] == ("copies", 100, 100)
    assert len(shown) <= 2 + 100 * 0.1 / 0.1  # throttled to about one draw per 10%
    assert finished == [("copies", 100, 100)]

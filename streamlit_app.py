"""Malle dashboard: ``streamlit run streamlit_app.py``.

The router and the shared frame. Every rerun runs this file first: the sidebar
picks the experiment, the cached engine is loaded (or built once, with progress
per stage), and the loaded experiment is handed to the page in session state.
"""

from __future__ import annotations

import sys
from pathlib import Path

from malle import parallel

# The worker pool's fork server imports the ops (PyTorch among them: seconds) on the other core while this
# process imports what follows; on a rerun the pool is already there and this does nothing.
parallel.start()

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from malle.cli.options import weights_from_args  # noqa: E402
from malle.dashboard import frame, widgets  # noqa: E402
from malle.dashboard.robustness import DEFAULT_OPS  # noqa: E402
from malle.errors import MalleError  # noqa: E402
from malle.io.cache import default_root  # noqa: E402
from malle.lab.experiment import ExperimentConfig  # noqa: E402

# The pages live in app_pages/, not pages/: a pages/ folder next to this file makes
# Streamlit start in its legacy multipage mode, which runs a deep-linked page
# (and AppTest.switch_page) without this frame.
PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/leaderboard:", default=True),
    st.Page("app_pages/augmentation_lab.py", title="Augmentation lab", icon=":material/science:"),
    st.Page("app_pages/per_transformation.py", title="Per-transformation breakdown", icon=":material/grid_on:"),
    st.Page("app_pages/method_comparison.py", title="Method comparison", icon=":material/compare:"),
    st.Page("app_pages/failure_gallery.py", title="Failure gallery", icon=":material/report:"),
    st.Page("app_pages/robustness.py", title="Robustness", icon=":material/show_chart:"),
    st.Page("app_pages/detection.py", title="Detection", icon=":material/policy:"),
    st.Page("app_pages/image_search.py", title="Search", url_path="search", icon=":material/image_search:"),
    BANK_PAGE := st.Page("app_pages/bank.py", title="Bank", icon=":material/inventory_2:"),
]
NO_SKIPS = pd.DataFrame(columns=["path", "reason"])


def choose_folder(roots) -> tuple[str, pd.DataFrame]:
    folder = st.text_input("Dataset folder", key="data_folder", placeholder="~/imagenet-mini/val",
                           help="ROOT/<class>/<image> or a flat folder of <class>_<name> images, inside: "
                                + ", ".join(str(r) for r in roots))
    if not folder.strip():
        st.info("Enter a dataset folder to run the experiment on it.")
        st.stop()
    return str(frame.resolve_folder(folder, roots)), NO_SKIPS


def choose_uploads(cache_root: str) -> tuple[str, pd.DataFrame]:
    files = st.file_uploader("Images", type=list(frame.UPLOAD_TYPES), accept_multiple_files=True,
                             key="data_uploads", help="The class is the file name's prefix before the first '_'.")
    if not files:
        st.info("Upload some images to run the experiment on them.")
        st.stop()
    saved = frame.save_uploads([(f.name, f.getvalue()) for f in files], cache_root)
    if len(saved.skipped):
        with st.expander(f"{len(saved.skipped)} uploaded file(s) skipped"):
            st.dataframe(saved.skipped, hide_index=True)
    if saved.folder is None:
        st.error("None of the uploaded files is a usable image.")
        st.stop()
    return str(saved.folder), saved.skipped


def sidebar_config(weights: dict, roots, cache_root: str) -> tuple[ExperimentConfig, str, pd.DataFrame]:
    with st.sidebar:
        st.header("Experiment")
        source = st.radio("Data source", frame.SOURCES, format_func=lambda s: s.label, key="data_source")
        data, skipped = None, NO_SKIPS
        if source == frame.FOLDER:
            data, skipped = choose_folder(roots)
        elif source == frame.UPLOAD:
            data, skipped = choose_uploads(cache_root)
        # One N widget per source, so switching source brings back that source's default.
        n = st.number_input("Originals (N)", min_value=1, max_value=100_000, value=source.default_n,
                            key=f"n_{source.key}")
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="seed")
        options, defaults = frame.method_options(weights)
        methods = st.multiselect("Methods", options, default=defaults, key="methods", format_func=frame.method_label)
        preset = st.selectbox("Preset", frame.PRESET_NAMES, key="preset", format_func=frame.preset_label,
                              help="reference: the reference experiment's chains; hard: DISC21-like, with composites")
        if not methods:
            st.warning("Pick at least one method.")
            st.stop()
    config = ExperimentConfig(data=data, n=int(n), seed=int(seed), methods=tuple(methods), weights=weights,
                              distractors=source.distractors, augment=frame.augment_for(preset))
    return config, source.label, skipped


def run_with_progress(exp):
    """Run (or load) what the Overview needs; on a first run, show real progress per stage. The open set and
    attribution wait until a page asks for them (``frame.ANALYSES``)."""
    cached = frame.core_cached(exp)
    results, box = widgets.with_progress("Preparing the experiment (first run only: every stage is cached on disk)…",
                                         lambda progress: frame.prepare_core(exp, progress), done="Experiment ready")
    if cached:
        box.empty()  # nothing was computed: no need to show a progress record
    return results


def load_results(exp, key: tuple[str, str]):
    store = widgets.results_store()
    found = store.get(key)
    if found is not None:
        return found
    # The background may be computing this experiment (the other preset): show its progress, not a spinner.
    widgets.await_progress("Preparing this experiment in the background…",
                           lambda: widgets.prefetcher().results_progress(key))
    waiting = st.empty()
    if store.building(key):
        waiting.info("Another session is preparing this experiment; this page opens when it is done…")
    results = store.obtain(key, lambda: run_with_progress(exp))
    waiting.empty()
    return results


def show_sidebar_status(exp, notices: list[str], weights: dict, cache_root: str) -> None:
    with st.sidebar:
        st.caption(f"In use: {len(exp.originals)} originals · {len(exp.manifest)} copies · "
                   f"{', '.join(exp.methods)}")
        for notice in frame.engine_notices(notices, exp.unavailable):
            st.warning(notice)
        for skipped in frame.unavailable_notices(weights):
            if skipped.method not in exp.methods:  # one line; how to fix it, in an expander (issue 23)
                st.caption(f":material/info: **{skipped.label} is not shown:** {skipped.reason}.")
                with st.expander(f"How to add {skipped.label} weights"):
                    st.markdown(frame.notice_text(skipped, exp.methods, exp.registry))
        for notice in frame.method_folder_notices():
            st.warning(notice)
        st.caption(f"Cache: `{cache_root}` ({widgets.cache_size(cache_root) / 2**20:,.0f} MB; "
                   "`python -m malle cache prune` trims it)")


def load_context(roots: tuple[str, ...]) -> widgets.AppContext:
    args = frame.parse_app_args(sys.argv[1:])
    weights = weights_from_args(args)  # the same --<method>-weights options as the CLI
    cache_root = str(default_root())
    try:
        config, source, skipped = sidebar_config(weights, [Path(r) for r in roots], cache_root)
        key = frame.config_key(config)
        exp, notices = widgets.experiment_handle(key, cache_root, roots)
        results = load_results(exp, (key, str(exp.root)))
    except MalleError as err:
        st.error(f"Cannot run this experiment: {err}")
        st.stop()
    show_sidebar_status(exp, notices, weights, cache_root)
    return widgets.AppContext(key, source, exp, results, skipped)


st.set_page_config(page_title="Malle", page_icon=":material/image_search:", layout="wide")
page = st.navigation(PAGES)
allowed = tuple(map(str, frame.allowed_roots(frame.parse_app_args(sys.argv[1:]))))
if page.url_path != BANK_PAGE.url_path:  # the Bank page reads a bank, not an experiment
    widgets.set_context(load_context(allowed))
try:
    page.run()
finally:  # also when the page stops early (st.stop) on what it has drawn
    if page.url_path != BANK_PAGE.url_path:
        # Drawn: now the other pages' data and the other preset, on the background thread (malle.dashboard.prefetch).
        widgets.start_background(widgets.context(), allowed, DEFAULT_OPS)

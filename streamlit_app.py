"""Malle dashboard: ``streamlit run streamlit_app.py``.

The router and the shared frame. Every rerun runs this file first: the sidebar
picks the experiment, the cached engine is loaded (or built once, with progress
per stage), and the loaded experiment is handed to the page in session state.
"""

from __future__ import annotations

import sys

import pandas as pd
import streamlit as st

from malle import dashboard as dash
from malle.cache import default_root
from malle.descriptors import WeightsUnavailable
from malle.experiment import ExperimentConfig
from malle.sampling import DatasetError

# The pages live in app_pages/, not pages/: a pages/ folder next to this file makes
# Streamlit start in its legacy multipage mode, which runs a deep-linked page
# (and AppTest.switch_page) without this frame.
PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/leaderboard:", default=True),
    st.Page("app_pages/augmentation_lab.py", title="Augmentation lab", icon=":material/science:"),
    st.Page("app_pages/per_transformation.py", title="Per-transformation breakdown", icon=":material/grid_on:"),
    st.Page("app_pages/method_comparison.py", title="Method comparison", icon=":material/compare:"),
    st.Page("app_pages/failure_gallery.py", title="Failure gallery", icon=":material/report:"),
    st.Page("app_pages/search.py", title="Search", icon=":material/image_search:"),
]


def choose_data(source: str, cache_root: str) -> tuple[str | None, pd.DataFrame]:
    """The dataset folder for the chosen source (None = demo) and the upload skip list."""
    skipped = pd.DataFrame(columns=["path", "reason"])
    if source == dash.FOLDER:
        folder = st.text_input("Dataset folder", key="data_folder", placeholder="/path/to/imagenet-mini/val",
                               help="ROOT/<class>/<image> or a flat folder of <class>_<name> images")
        if not folder.strip():
            st.info("Enter a dataset folder to run the experiment on it.")
            st.stop()
        return folder.strip(), skipped
    if source == dash.UPLOAD:
        files = st.file_uploader("Images", type=list(dash.UPLOAD_TYPES), accept_multiple_files=True,
                                 key="data_uploads", help="The class is the file name's prefix before the first '_'.")
        if not files:
            st.info("Upload some images to run the experiment on them.")
            st.stop()
        saved = dash.save_uploads([(f.name, f.getvalue()) for f in files], cache_root)
        if len(saved.skipped):
            with st.expander(f"{len(saved.skipped)} uploaded file(s) skipped"):
                st.dataframe(saved.skipped, hide_index=True)
        if saved.folder is None:
            st.error("None of the uploaded files is a usable image.")
            st.stop()
        return str(saved.folder), saved.skipped
    return None, skipped


def sidebar_config(weights: str | None, cache_root: str) -> tuple[ExperimentConfig, str, pd.DataFrame]:
    with st.sidebar:
        st.header("Experiment")
        source = st.radio("Data source", dash.SOURCES, key="data_source")
        data, skipped = choose_data(source, cache_root)
        # One N widget per source, so switching source brings back that source's default.
        n = st.number_input("Originals (N)", min_value=1, max_value=100_000, value=dash.default_n(source),
                            key=f"n_{dash.SOURCE_KEYS[source]}")
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="seed")
        options, defaults = dash.method_options(weights)
        methods = st.multiselect("Methods", options, default=defaults, key="methods")
        if not methods:
            st.warning("Pick at least one method.")
            st.stop()
    config = ExperimentConfig(data=data, n=int(n), seed=int(seed), methods=tuple(methods), resnet50_weights=weights)
    return config, source, skipped


def run_with_progress(exp):
    """Run (or load) every stage; on a first run, show real progress per stage."""
    box = st.empty()
    with box.container():
        with st.status("Preparing the experiment (first run only: every stage is cached on disk)…",
                       expanded=True) as status:
            bar = st.progress(0.0, text="starting…")
            exp.progress = dash.ProgressReporter(
                show=lambda desc, done, total: bar.progress(done / total if total else 1.0,
                                                            text=dash.progress_text(desc, done, total)),
                finished=lambda desc, done, total, seconds: status.write(
                    f"✓ {dash.progress_text(desc, done, total)} in {seconds:.1f} s"))
            try:
                results = exp.run()
            finally:
                exp.progress = None
            status.update(label="Experiment ready", state="complete", expanded=False)
    if results.timings()["cached"].all():
        box.empty()  # nothing was computed: no need to show a progress record
    return results


def load_results(exp, key: str, cache_root: str):
    store = dash.results_store()
    if (key, cache_root) not in store:
        waiting = st.empty()
        if store["lock"].locked():
            waiting.info("Another session is preparing an experiment; this page opens when it is done…")
        with store["lock"]:  # one build per process; a second session waits, then reuses it
            waiting.empty()
            if (key, cache_root) not in store:
                store[(key, cache_root)] = run_with_progress(exp)
    return store[(key, cache_root)]


def show_notices(exp, notices: list[str], weights: str | None) -> None:
    with st.sidebar:
        st.caption(f"In use: {len(exp.originals)} originals · {len(exp.manifest)} copies · "
                   f"{', '.join(exp.methods)}")
        for notice in dash.engine_notices(notices):
            st.warning(notice)
        if "resnet50" not in exp.methods and (notice := dash.resnet50_notice(weights)):
            st.info(notice)
        st.caption(f"Cache: `{default_root()}`")


def load_context() -> dash.AppContext:
    weights = dash.parse_app_args(sys.argv[1:]).resnet50_weights
    cache_root = str(default_root())
    config, source, skipped = sidebar_config(weights, cache_root)
    key = dash.config_key(config)
    try:
        exp, notices = dash.experiment_handle(key, cache_root)
        results = load_results(exp, key, cache_root)
    except (DatasetError, WeightsUnavailable, ValueError) as err:
        st.error(f"Cannot run this experiment: {err}")
        st.stop()
    show_notices(exp, notices, weights)
    return dash.AppContext(key, source, exp, results, skipped)


st.set_page_config(page_title="Malle", page_icon=":material/image_search:", layout="wide")
page = st.navigation(PAGES)
dash.set_context(load_context())
page.run()

"""Every Streamlit call in ``malle``: caching, session state, and the widgets pages share.

The pages in ``app_pages/`` and the frame in ``streamlit_app.py`` use these; the
logic they draw lives in the other modules of this package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from malle.dashboard import prefetch
from malle.dashboard.augmentation_lab import control_for, param_key, rolled_state
from malle.dashboard.frame import (
    ANALYSES,
    PRESET_NAMES,
    Handles,
    ProgressReporter,
    ResultsStore,
    analyse,
    other_preset,
    preset_key,
    progress_text,
)
from malle.dashboard.shared import THUMB_PX, Thumb, thumbnail_jpeg
from malle.io import cache
from malle.lab.experiment import Experiment, Results
from malle.lab.stages import Node
from malle.ops import OPS, ParamSpec, SelectBox, Slider
from malle.retrieval.metrics import Metric

CONTEXT_KEY = "malle_context"
TRUE_ORIGINAL_MARK = ":green[:material/check_circle: **true original**]"
CACHE_SIZE_TTL_S = 60  # walking a large cache takes a while; its size need not be live


# -- caches -----------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: Path | str) -> bytes:
    return thumbnail_jpeg(str(path))


@st.cache_data(show_spinner=False, max_entries=1024)
def _cached_result(key: str, name: str, args: tuple, _func: Callable, _results: Results) -> Any:
    return _func(_results, *args)


@st.cache_resource(show_spinner=False)
def handles() -> Handles:
    """Engine handles shared by every session of this server process and its background work."""
    return Handles()


def experiment_handle(key: str, cache_root: str, roots: tuple[str, ...]) -> tuple[Experiment, list[str]]:
    return handles().get(key, cache_root, roots)


@st.cache_resource(show_spinner=False)
def results_store() -> ResultsStore:
    """Finished experiments shared by every session of this server process."""
    return ResultsStore()


@st.cache_resource(show_spinner=False)
def prefetcher() -> prefetch.Prefetcher:
    """The background work of this server process (``malle.dashboard.prefetch``)."""
    return prefetch.Prefetcher(results_store())


@st.cache_data(show_spinner=False, ttl=CACHE_SIZE_TTL_S)
def cache_size(root: str) -> int:
    return cache.total_bytes(Path(root))


# -- what the frame hands to every page -------------------------------------------------------------
@dataclass
class AppContext:
    key: str
    source: str
    experiment: Experiment
    results: Results
    upload_skipped: pd.DataFrame

    @property
    def methods(self) -> list[str]:
        return self.results.methods

    @property
    def labels(self) -> dict[str, str]:
        return self.cached(lambda results: results.labels, name="labels")

    def cached(self, func: Callable, *args: Any, name: str | None = None) -> Any:
        """``func(results, *args)`` through st.cache_data, keyed by experiment, function and args.

        A named function's key is its module and qualified name, unique in the process; a lambda has none, so it
        must be ``name``d, with a plain word that no qualified name can equal (tests/test_architecture.py checks
        that no two call sites share one)."""
        if name is None and func.__name__ == "<lambda>":
            raise TypeError("ctx.cached(lambda ...) needs name=: every lambda would share the key '<lambda>'")
        if name is not None and not name.isidentifier():
            raise TypeError(f"cache name {name!r}: a plain word, so it cannot equal a function's module.qualname")
        return _cached_result(self.key, name or f"{func.__module__}.{func.__qualname__}", args, _func=func,
                              _results=self.results)

    def metric(self, method: str) -> Metric:
        return self.experiment.descriptor(method).metric

    def neighbours(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        return self.cached(lambda results, m: results.experiment.neighbours(m), method, name="neighbours")


def set_context(ctx: AppContext) -> None:
    st.session_state[CONTEXT_KEY] = ctx


def context() -> AppContext:
    """The experiment the frame loaded in this run (pages run after the frame)."""
    return st.session_state[CONTEXT_KEY]


# -- long work ----------------------------------------------------------------------------------------
def with_progress(title: str, work: Callable[[ProgressReporter], Any], done: str = "Ready") -> Any:
    """Run ``work(progress)`` inside an ``st.status`` box with a bar per stage; returns its result and the box."""
    box = st.empty()
    with box.container():
        with st.status(title, expanded=True) as status:
            bar = st.progress(0.0, text="starting…")
            reporter = ProgressReporter(
                show=lambda desc, n, total: bar.progress(n / total if total else 1.0,
                                                         text=progress_text(desc, n, total)),
                finished=lambda desc, n, total, seconds: status.write(
                    f"✓ {progress_text(desc, n, total)} in {seconds:.1f} s"))
            result = work(reporter)
            status.update(label=done, state="complete", expanded=False)
    return result, box


WAIT_POLL_S = 0.5  # how often a waiting page redraws the background's progress


def await_progress(title: str, progress: Callable[[], prefetch.JobProgress]) -> None:
    """While ``progress()`` says the background is computing what this page needs, show it in an ``st.status``
    box with a moving bar (stage i of n, and that stage's own count); returns once it is no longer running.
    Draws nothing otherwise: what is only queued, the page computes at once itself (it goes first)."""
    found = progress()
    if found.readiness is not prefetch.RUNNING:
        return
    box = st.empty()
    with box.container(), st.status(title, expanded=True) as status:
        bar = st.progress(0.0, text=found.text)
        while found.readiness is prefetch.RUNNING:
            bar.progress(found.fraction, text=found.text)
            time.sleep(WAIT_POLL_S)
            found = progress()
        status.update(label=title.split("…")[0] + ": ready", state="complete", expanded=False)
    box.empty()


def await_stages(title: str, nodes: Sequence[Node], compute: Callable[[ProgressReporter], Any]) -> None:
    """Make sure the stages ``nodes`` of this page's experiment are there: wait for the background with its
    progress when it holds them, then compute what is still missing here (``compute(progress)``, with a bar per
    stage): nothing when the background has made it, everything when it was not scheduled or failed."""
    exp = context().experiment
    await_progress(title, lambda: prefetcher().progress(exp, nodes))
    if not all(exp.engine.is_cached(exp, node) for node in nodes):
        with_progress(title, compute)[1].empty()


def await_analysis(kind: str, methods: Sequence[str] | None = None) -> None:
    """``await_stages`` for an analysis of ``frame.ANALYSES`` (``"attribution"``, ``"openset"``), of ``methods``
    (default: every method of the experiment)."""
    exp = context().experiment
    chosen = list(methods or exp.methods)
    await_stages(ANALYSES[kind], [Node(kind, (m,)) for m in chosen], lambda p: analyse(exp, kind, p, chosen))


def start_background(ctx: AppContext, roots: tuple[str, ...], sweep_ops: Sequence[str]) -> None:
    """Queue, once per experiment shown, what the other pages need and the other preset's run
    (``prefetch.plan``). Called right after the page is drawn."""
    exp = ctx.experiment
    other_key = preset_key(ctx.key, other_preset(ctx.key))

    def planned() -> list[prefetch.Planned]:
        other = experiment_handle(other_key, str(exp.root), roots)[0] if other_key != ctx.key else None
        return prefetch.plan(exp, sweep_ops, other, (other_key, str(exp.root)))

    prefetcher().start((ctx.key, str(exp.root)), planned)


def ready_presets(ctx: AppContext) -> dict[str, Results]:
    """Every preset of this experiment whose results are ready in this server process."""
    keys = {name: (preset_key(ctx.key, name), str(ctx.experiment.root)) for name in PRESET_NAMES}
    return prefetch.ready_results(results_store(), keys)


def failing_alternatives(method: str) -> list[prefetch.Alternative]:
    """The other (preset, method) pairs of this experiment that have failures (``prefetch.failing_alternatives``)."""
    ctx = context()
    return prefetch.failing_alternatives(ready_presets(ctx), prefetch.preset_of(ctx.experiment), method)


def preset_progress(preset: str) -> prefetch.JobProgress:
    """How ready this experiment under ``preset`` is (READY when its results are in the store)."""
    ctx = context()
    return prefetcher().results_progress((preset_key(ctx.key, preset), str(ctx.experiment.root)))


def switch_to(alternative: prefetch.Alternative, method_key: str) -> None:
    """Button callback: show ``alternative``: the sidebar's preset, and the page's method widget ``method_key``."""
    st.session_state["preset"] = alternative.preset
    st.session_state[method_key] = alternative.method


# -- widgets ------------------------------------------------------------------------------------------
def thumbnail_grid(thumbs: Sequence[Thumb], columns: int = 5) -> None:
    for start in range(0, len(thumbs), columns):
        for col, thumb in zip(st.columns(columns), thumbs[start:start + columns]):
            # A fixed width: with "content" width a long caption would stretch its image.
            col.image(thumbnail(thumb.path), caption=thumb.caption, width=THUMB_PX)
            if thumb.is_true:  # Streamlit's Material icon, not an emoji: no emoji font is needed
                col.markdown(TRUE_ORIGINAL_MARK)


def thumbnail_grid_or(thumbs: Sequence[Thumb], when_empty: str, columns: int = 5) -> None:
    """The grid, or a success note saying why there is nothing to show."""
    if thumbs:
        thumbnail_grid(thumbs, columns)
    else:
        st.success(when_empty)


def set_state(key: str, value: Any) -> None:
    """Widget callback: put ``value`` into another widget's state (e.g. a thumbnail's "Use" button)."""
    st.session_state[key] = value


@singledispatch
def draw_control(control: Any, container: Any, label: str, key: str, help: str) -> Any:
    raise TypeError(f"no widget draws a {type(control).__name__}")


@draw_control.register
def _(control: Slider, container: Any, label: str, key: str, help: str) -> Any:
    return container.slider(label, control.low, control.high, step=control.step, key=key, help=help)


@draw_control.register
def _(control: SelectBox, container: Any, label: str, key: str, help: str) -> Any:
    return container.selectbox(label, control.options, key=key, help=help)


def param_widget(container: Any, op: str, spec: ParamSpec) -> Any:
    """One parameter's widget; its value lives in session state under param_key(op, name)."""
    key, control = param_key(op, spec.name), control_for(spec)
    if key not in st.session_state:
        st.session_state[key] = control.default
    return draw_control(control, container, spec.name, key, spec.help)


def roll_into_state(ops: Sequence[str], size: tuple[int, int]) -> None:
    """Button callback: fresh random parameters for the chosen ops, written into their widgets."""
    st.session_state.update(rolled_state(ops, size, np.random.default_rng()))


def params_from_state(ops: Sequence[str]) -> dict[str, dict]:
    return {op: {spec.name: st.session_state.get(param_key(op, spec.name), spec.default) for spec in OPS[op].params}
            for op in ops}


def number_columns(table: pd.DataFrame, fmt: str = "%.4f") -> dict:
    """column_config showing every float column with ``fmt`` (the reference tables use 4 decimals)."""
    return {c: st.column_config.NumberColumn(format=fmt) for c in table.columns
            if pd.api.types.is_float_dtype(table[c])}


def show_table(table: pd.DataFrame, key: str, fmt: str = "%.4f", **options: Any) -> None:
    st.dataframe(table, column_config=number_columns(table, fmt), key=key, **options)

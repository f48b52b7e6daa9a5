"""The dashboard's background work (malle.dashboard.prefetch): real small experiments, real stages, no Streamlit.

- the plan computes what the pages read, in their order, and the other preset's run into the results store;
- a page asking while a stage is being built waits for it and reads the same folder (nothing built twice);
- readiness moves from ABSENT/QUEUED through RUNNING to READY, and a failing job says FAILED with its line;
- failure counts are the Failure gallery's own definition, and the alternatives point to where failures are.
"""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from malle.dashboard import frame, prefetch
from malle.dashboard.failure_gallery import failures
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.lab.stages import Node

TIMEOUT_S = 600


def small(tmp_path, preset: str = "reference", methods=("phash",), distractors: int = 6) -> tuple[str, Experiment]:
    config = ExperimentConfig(n=6, methods=methods, distractors=distractors, augment=frame.augment_for(preset),
                              precision="fp32")
    key = frame.config_key(config)
    return key, Experiment(config, tmp_path / "cache")


def test_plan_computes_what_the_pages_read_and_the_other_preset(tmp_path):
    key, exp = small(tmp_path)
    store = frame.ResultsStore()
    store.obtain((key, str(exp.root)), lambda: frame.prepare_core(exp))  # the first Overview
    assert not any(exp.is_cached(kind, "phash") for kind in ("attribution", "openset"))
    other_key = frame.preset_key(key, frame.other_preset(key))
    other = Experiment(frame.config_from_key(other_key), exp.root)
    assert other.config.augment.preset == "hard"
    fetcher = prefetch.Prefetcher(store)
    fetcher.start((key, str(exp.root)),
                  lambda: prefetch.plan(exp, ["jpeg"], other, (other_key, str(exp.root))))
    assert fetcher.wait_idle(TIMEOUT_S)
    for run in (exp, other):
        assert all(run.engine.is_cached(run, node) for node in run.analysis_nodes() + run.severity_nodes(["jpeg"]))
    hard = store.get((other_key, str(exp.root)))
    assert hard is not None and len(hard.per_query) == len(other.manifest)
    assert fetcher.progress(exp, exp.analysis_nodes()).readiness is prefetch.READY
    assert fetcher.results_progress((other_key, str(exp.root))).readiness is prefetch.READY
    # The same plan again finds everything done: nothing is queued.
    assert all(fetcher.schedule(planned) is None for planned in prefetch.plan(exp, ["jpeg"]))


def test_a_page_waits_for_the_stage_the_background_builds_and_reads_the_same_folder(tmp_path):
    key, exp = small(tmp_path)
    frame.prepare_core(exp)
    fetcher = prefetch.Prefetcher(frame.ResultsStore())
    nodes = exp.severity_nodes(["rotate"])
    assert fetcher.progress(exp, nodes).readiness is prefetch.ABSENT
    job = fetcher.schedule(prefetch.Planned("sweeps", exp, nodes))
    seen = {fetcher.progress(exp, nodes).readiness}
    built = exp.engine.obtain(exp, nodes[-1])  # the page asks while the thread is at it: it waits on the lock
    assert fetcher.wait_idle(TIMEOUT_S)
    seen.add(fetcher.progress(exp, nodes).readiness)
    assert prefetch.READY in seen and seen <= {prefetch.QUEUED, prefetch.RUNNING, prefetch.READY}
    assert job.done == len(job.nodes) and job.error is None
    assert built.folder == exp.folder(*[nodes[-1].kind, *nodes[-1].args])
    assert len(list(built.folder.parent.parent.glob("sweepscore/.*"))) == 0  # no second build left behind


def test_progress_text_moves_with_the_job():
    job = prefetch.JobProgress("Robustness sweeps", prefetch.RUNNING, 2, 8, "phash: jpeg 30/60")
    assert job.fraction == 0.25 and "stage 3 of 8" in job.text and "phash: jpeg 30/60" in job.text
    assert prefetch.JobProgress("", prefetch.READY).fraction == 1.0


def test_a_failing_job_is_failed_with_its_line_and_the_next_job_still_runs(tmp_path, capsys):
    key, exp = small(tmp_path)
    frame.prepare_core(exp)
    fetcher = prefetch.Prefetcher(frame.ResultsStore())
    gone = exp.originals["file"].iloc[0]
    (exp.originals_dir / gone).unlink()  # a sweep's level 0 copies each original's bytes: this one is not there
    bad = fetcher.schedule(prefetch.Planned("bad", exp, [Node("sweep", ("jpeg", 0))]))
    good = fetcher.schedule(prefetch.Planned("good", exp, [Node("openset", ("phash",))]))
    assert fetcher.wait_idle(TIMEOUT_S)
    assert bad.state is prefetch.FAILED and gone in bad.error
    assert good.state is prefetch.READY and exp.is_cached("openset", "phash")
    assert "background job 'bad' failed" in capsys.readouterr().err
    assert fetcher.progress(exp, bad.nodes).readiness is prefetch.FAILED


def test_a_newer_experiment_drops_the_queued_work_of_the_one_before(tmp_path):
    key, exp = small(tmp_path)
    frame.prepare_core(exp)
    fetcher = prefetch.Prefetcher(frame.ResultsStore())
    gate = threading.Event()
    blocker = prefetch.Planned("blocker", exp, [Node("attribution", ("phash",))],
                               then=lambda: gate.wait(TIMEOUT_S) and [])
    fetcher.start("first", lambda: [blocker, prefetch.Planned("sweeps", exp, exp.severity_nodes(["jpeg"]))])
    fetcher.start("first", lambda: pytest.fail("planned twice for one experiment"))
    fetcher.start("second", lambda: [])
    gate.set()
    assert fetcher.wait_idle(TIMEOUT_S)
    assert not any(exp.is_cached(n.kind, *n.args) for n in exp.severity_nodes(["jpeg"]))


def test_failure_counts_are_the_gallerys_failures_and_alternatives_point_to_them(tmp_path, demo_results):
    by_preset = {"reference": demo_results}
    counts = prefetch.failure_counts(by_preset)
    assert [(a.preset, a.method) for a in counts] == [("reference", m) for m in demo_results.methods]
    for alt in counts:
        assert alt.failures == len(failures(demo_results, alt.method))
        assert alt.queries == int((demo_results.per_query["method"] == alt.method).sum())
    best = max(counts, key=lambda a: a.failures)
    assert best.failures > 0, "the demo has failures for some method"
    for alt in counts:
        others = prefetch.failing_alternatives(by_preset, "reference", alt.method)
        assert (alt.preset, alt.method) not in [(o.preset, o.method) for o in others]
        assert all(o.failures > 0 for o in others)
        assert [o.failures for o in others] == sorted((o.failures for o in others), reverse=True)


def test_alternatives_put_the_current_preset_first(demo_results):
    per_query = demo_results.per_query.copy()
    method = demo_results.methods[0]
    hard = type(demo_results)(demo_results.experiment, per_query.assign(rank=pd.NA).astype({"rank": "Int64"}))
    found = prefetch.failing_alternatives({"reference": demo_results, "hard": hard}, "reference", method)
    presets = [a.preset for a in found]
    assert presets == sorted(presets, key=lambda p: p != "reference")
    assert ("hard", method) in [(a.preset, a.method) for a in found]


def test_the_other_preset_is_the_same_experiment_under_it_and_handles_are_shared(tmp_path):
    key, _ = small(tmp_path)
    assert frame.other_preset(key) == "hard"
    hard = frame.preset_key(key, "hard")
    assert frame.other_preset(hard) == "reference" and frame.preset_key(hard, "reference") == key
    config, other = frame.config_from_key(key), frame.config_from_key(hard)
    assert other.augment == frame.augment_for("hard") and other.augment != config.augment
    assert (other.n, other.seed, other.methods, other.distractors) == (config.n, config.seed, config.methods, 6)
    handles = frame.Handles()
    first = handles.get(key, str(tmp_path), ())
    assert handles.get(key, str(tmp_path), ()) is first and handles.get(hard, str(tmp_path), ()) is not first

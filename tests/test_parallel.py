"""Copies, distractors and attribution made in worker processes are the same bytes as in one process.

Each run is the same small experiment on the demo photos with the ``hard`` preset (composite ops, so the
donor pictures must reach the workers), once with ``MALLE_WORKERS=1`` (everything in this process) and
once with two workers, each in a cache of its own. Every stage folder's files are compared by SHA-256
(``done.json`` records them). Attribution's replays are cached per query and left-out op.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from malle import parallel
from malle.dashboard import frame
from malle.data.distractor_queries import make_distractors
from malle.data.hard_negatives import KINDS, kind_counts
from malle.data.sampling import Candidate
from malle.errors import ConfigError
from malle.evaluation.leave_one_out import REPLAY_KIND, charged_ops, missed_mask
from malle.io import cache
from malle.io.images import load_rgb
from malle.lab.experiment import Experiment, ExperimentConfig
from malle.ops import chain_from_json, get_preset

CONFIG = ExperimentConfig(n=16, seed=3, methods=("phash",), distractors=40, augment=get_preset("hard").augment())
STAGES = (("copies",), ("distractors",), ("attribution", "phash"))


def _worker_pid(_: int) -> int:
    return os.getpid()


def run_with(workers: int, root: Path) -> Experiment:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(parallel.WORKERS_ENV, str(workers))
        exp = Experiment(CONFIG, root)
        for stage in STAGES:
            exp.stage(*stage)
    return exp


@pytest.fixture(scope="module")
def serial_and_parallel(tmp_path_factory) -> tuple[Experiment, Experiment]:
    return (run_with(1, tmp_path_factory.mktemp("serial")), run_with(2, tmp_path_factory.mktemp("parallel")))


def recorded_files(exp: Experiment, *stage) -> dict[str, list]:
    """{file: [size, sha256]} of a finished stage folder, as its done.json records and verifies them."""
    folder = exp.stage(*stage).folder
    assert cache.problem_with(folder) is None
    return cache.read_json(folder / cache.DONE_MARK)["artifacts"]


def test_workers_are_other_processes():
    pids = list(parallel.ordered_map(_worker_pid, range(8), workers=2))
    assert os.getpid() not in pids and len(pids) == 8
    assert list(parallel.ordered_map(_worker_pid, range(3), workers=1)) == [os.getpid()] * 3


def _torch_threads(_: int) -> int:
    import torch

    return torch.get_num_threads()


def test_workers_compute_on_their_share_of_the_cores():
    """Two workers each taking every core made the demo's copies 2.7x slower (torchvision's blur on 2 cores)."""
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert set(parallel.ordered_map(_torch_threads, range(6), workers=2)) == {share}


SCRIPT_AS_MAIN = """
if __name__ != "__main__":
    raise SystemExit("the script ran again in a worker")  # what Streamlit's app would do: run the app
import os
from malle import parallel
print(list(parallel.ordered_map(os.fspath, ["a", "b", "c", "d"], workers=2)))
"""


def test_workers_never_run_a_script_that_is_main_again(tmp_path):
    """Streamlit runs the app as ``__main__`` by path; workers must not re-run it to rebuild their main."""
    script = tmp_path / "app.py"
    script.write_text(SCRIPT_AS_MAIN)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['a', 'b', 'c', 'd']"


OWNER_THEN_KILLED = """
import json, operator, os, sys, time
from malle import parallel
workers = set(parallel.ordered_map(operator.call, [os.getpid] * 8, workers=2))
servers = set(parallel.ordered_map(operator.call, [os.getppid] * 8, workers=2))
print(json.dumps(sorted(workers | servers)), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie left for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_killed_owner_leaves_no_worker_or_fork_server_behind(tmp_path):
    """kill -9 of the process that owns the pool: its workers and the fork server end too, instead of holding
    their memory for good (each worker holds the server's "alive" pipe and its task queue open)."""
    script = tmp_path / "owner.py"
    script.write_text(OWNER_THEN_KILLED)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        spawned = json.loads(owner.stdout.readline())
        assert owner.pid not in spawned and len(spawned) >= 2 and all(map(_running, spawned))
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 120  # a liveness bound, not a speed figure: a leak never ends
    while any(map(_running, spawned)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in spawned if _running(pid)]


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.setenv(parallel.WORKERS_ENV, "3")
    assert parallel.worker_count() == 3
    monkeypatch.setenv(parallel.WORKERS_ENV, "none")
    with pytest.raises(parallel.ConfigError, match="MALLE_WORKERS"):
        parallel.worker_count()


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s[0])
def test_parallel_stage_is_byte_identical_to_serial(serial_and_parallel, stage):
    serial, parallel_run = serial_and_parallel
    files = recorded_files(serial, *stage)
    assert files == recorded_files(parallel_run, *stage)
    if stage[0] != "attribution":
        jpegs = [name for name in files if name.endswith(".JPEG")]
        manifest = cache.read_table(serial.stage(*stage).folder / "manifest.parquet")
        assert sorted(jpegs) == sorted("images/" + manifest["file"]) and len(jpegs) > 0


def test_the_distractors_are_distinct_photos_and_the_hard_presets_share_of_every_kind(serial_and_parallel):
    """So the byte-identity above covers hard negatives of every kind, and copies of distinct photos."""
    _, parallel_run = serial_and_parallel
    manifest = parallel_run.distractor_manifest
    copies = manifest[manifest["kind"] == "copy"]
    assert len(copies) == 30 and copies["origin"].is_unique
    assert kind_counts(manifest) == {kind.name: 2 if i == 0 else 1 for i, kind in enumerate(KINDS)}  # 10 of 40


def test_composites_used_donors(serial_and_parallel):
    """The run is only a test of donors reaching the workers if its chains pasted some."""
    _, parallel_run = serial_and_parallel
    assert parallel_run.op_context.donors
    ops = set("|".join(parallel_run.manifest["ops"]).split("|"))
    assert ops & {"inset", "overlay", "collage"}


def test_attribution_equals_uncached_replays(serial_and_parallel):
    _, exp = serial_and_parallel
    per_query = cache.read_table(exp.stage("search", "phash").folder / "per_query.parquet")
    charged = cache.read_table(exp.stage("attribution", "phash").folder / "per_query.parquet")
    missed = per_query[missed_mask(per_query)]
    assert len(missed) == len(charged) > 0
    chains = exp.manifest.set_index("file")["chain"]
    ids = {file: i for i, file in enumerate(exp.originals["file"])}
    desc, index = exp.descriptor("phash"), exp.search_index("phash")
    for row, recorded in zip(missed.itertuples(), charged["charged"]):
        ops = charged_ops(desc, index, load_rgb(exp.originals_dir / row.source), chain_from_json(chains[row.query]),
                          ids[row.source], exp.op_context)
        assert ("|".join(ops) or "the combination") == recorded


def replay_folders(root: Path) -> set[str]:
    return {p.name for p in (root / REPLAY_KIND).iterdir() if (p / cache.DONE_MARK).is_file()}


def test_replays_cached_per_query_and_left_out_op(serial_and_parallel):
    _, exp = serial_and_parallel
    phash = cache.read_table(exp.stage("search", "phash").folder / "per_query.parquet")
    missed_by_phash = set(phash[missed_mask(phash)]["query"])
    before = replay_folders(exp.root)
    assert len(before) == phash[missed_mask(phash)]["chain_length"].sum()
    # Another method in the same cache replays only the queries phash did not miss.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(parallel.WORKERS_ENV, "2")
        other = Experiment(dataclasses.replace(CONFIG, methods=("dhash",)), exp.root)
        other.stage("attribution", "dhash")
    dhash = cache.read_table(other.stage("search", "dhash").folder / "per_query.parquet")
    new = dhash[missed_mask(dhash) & ~dhash["query"].isin(missed_by_phash)]
    assert len(replay_folders(exp.root) - before) == new["chain_length"].sum()
    assert before <= replay_folders(exp.root)


# -- distractors: unreadable images and name clashes, where planning in parallel guesses wrong ------------------
@pytest.fixture(scope="module")
def clash_pool(tmp_path_factory, demo_photos) -> list[Candidate]:
    """Ten photos, plus three images that share one name in three folders: two photos and an unreadable one."""
    root = tmp_path_factory.mktemp("clash")
    pool = []
    for i, photo in enumerate(demo_photos[:10]):
        target = root / f"c{i % 3}" / f"c{i % 3}_{i}.JPEG"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(photo, target)
        pool.append(Candidate(target, f"c{i % 3}", target.relative_to(root).as_posix()))
    named = (("a", demo_photos[20].read_bytes()), ("b", b"not a jpeg"), ("z", demo_photos[21].read_bytes()))
    for folder, data in named:
        target = root / folder / "tench_1.JPEG"
        target.parent.mkdir()
        target.write_bytes(data)
        pool.append(Candidate(target, "tench", target.relative_to(root).as_posix()))
    return pool


def seed_with_bad_before_clashes(pool: list[Candidate]) -> int:
    """A seed whose drawing order puts the unreadable image before both photos of its name."""
    index = {c.rel: i for i, c in enumerate(pool)}
    for seed in range(200):
        order = list(np.random.default_rng([seed, 0xD157]).permutation(len(pool)))
        if order.index(index["b/tench_1.JPEG"]) < min(order.index(index["a/tench_1.JPEG"]),
                                                       order.index(index["z/tench_1.JPEG"])):
            return seed
    raise AssertionError("no such seed")


def test_distractors_with_skips_and_clashes_match_serial(clash_pool, tmp_path, monkeypatch):
    seed = seed_with_bad_before_clashes(clash_pool)
    config = get_preset("reference").augment()
    every = len(make_distractors(clash_pool, 10_000, tmp_path / "all", config, seed)[0])
    assert every == len(clash_pool) - 1  # one copy per readable image
    wanted = every  # every image is reached: the first round asks one image too few (the unreadable one)
    made = {}
    for workers in (1, 2):
        monkeypatch.setenv(parallel.WORKERS_ENV, str(workers))
        out = tmp_path / f"w{workers}"
        manifest, skipped = make_distractors(clash_pool, wanted, out, config, seed)
        made[workers] = (manifest, skipped, {p.name: cache.file_digest(p) for p in out.iterdir()})
    (manifest, skipped, files), (manifest2, skipped2, files2) = made[1], made[2]
    pd.testing.assert_frame_equal(manifest, manifest2)
    assert skipped == skipped2 == [{"path": "b/tench_1.JPEG", "reason": skipped[0]["reason"]}]
    assert files == files2 and sorted(files) == sorted(manifest["file"])
    assert len(manifest) == wanted
    assert {"a/tench_1.JPEG", "z/tench_1.JPEG"} <= set(manifest["origin"]) and manifest["origin"].is_unique


# -- the dashboard computes the open set and attribution only when a page asks --------------------------------
def test_overview_needs_no_analysis_and_pages_compute_theirs(tmp_path):
    exp = Experiment(ExperimentConfig(n=8, seed=1, methods=("phash", "dhash"), distractors=10), tmp_path)
    assert not frame.core_cached(exp)
    results = frame.prepare_core(exp)
    assert frame.core_cached(exp) and len(results.per_query) == 2 * len(exp.manifest)
    built = {entry.kind for entry in cache.entries(tmp_path)}
    assert {"samples", "copies", "embed", "search"} <= built
    assert not built & {"distractors", "openset", "attribution", REPLAY_KIND}
    assert frame.analysis_pending(exp, "attribution") and frame.analysis_pending(exp, "openset")
    frame.analyse(exp, "attribution", methods=["phash"])
    assert not frame.analysis_pending(exp, "attribution", ["phash"]) and frame.analysis_pending(exp, "attribution")
    assert not {e.kind for e in cache.entries(tmp_path)} & {"distractors", "openset"}
    frame.analyse(exp, "openset")
    assert not frame.analysis_pending(exp, "openset")


FORK_SERVER_AT_CHECK = """
import sys
import psutil
from malle.dashboard import frame
from malle.lab.experiment import Experiment, ExperimentConfig

def servers():
    return sum("multiprocessing.forkserver" in " ".join(child.cmdline()) for child in psutil.Process().children())

exp = Experiment(ExperimentConfig(n=6, seed=1, methods=("phash",), distractors=0), sys.argv[1])
check, seen = exp.check, []
exp.check = lambda: (seen.append(servers()), check())
frame.prepare_core(exp)
print(seen, frame.core_cached(exp))
"""


def test_the_fork_server_imports_while_the_models_load(tmp_path):
    """A first Overview launches the workers' fork server before loading the models, so the two overlap."""
    script = tmp_path / "first_overview.py"
    script.write_text(FORK_SERVER_AT_CHECK)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), parallel.WORKERS_ENV: "2"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[1] True"


def test_a_method_that_cannot_load_fails_the_overview_before_any_stage(tmp_path):
    exp = Experiment(ExperimentConfig(n=8, seed=1, methods=("phash",), distractors=0, index="IVF64,PQ8"), tmp_path)
    with pytest.raises(ConfigError, match="binary hashes"):
        frame.prepare_core(exp)
    assert not list(cache.entries(tmp_path))
